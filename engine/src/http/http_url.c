/* Berth engine: plain http:// URLs for the engine's own HTTP clients
 * (http_url.h). */
#include "http_url.h"

#include <string.h>

int berth_http_parse_url(const char *url, char *host, size_t host_cap,
                         uint16_t *port, char *path, size_t path_cap,
                         berth_errmsg *err) {
  static const char scheme[] = "http://";
  if (url == NULL || strncmp(url, scheme, sizeof scheme - 1) != 0)
    return berth_errf(err, BERTH_E_CONFIG,
                      "'%.200s' is not an http:// URL "
                      "(only plain OTLP/HTTP is spoken; use a collector "
                      "next to Berth for TLS)",
                      url ? url : "");
  const char *h = url + sizeof scheme - 1;
  const char *hend;
  const char *after;
  if (*h == '[') {
    hend = strchr(h, ']');
    if (hend == NULL)
      return berth_errf(err, BERTH_E_CONFIG,
                        "'%.200s': unclosed '[' in "
                        "the host",
                        url);
    h++;
    after = hend + 1;
  } else {
    hend = h + strcspn(h, ":/?#");
    after = hend;
  }
  size_t hl = (size_t)(hend - h);
  if (hl == 0 || hl >= host_cap)
    return berth_errf(err, BERTH_E_CONFIG,
                      "'%.200s': no host, or a host "
                      "longer than %zu bytes",
                      url, host_cap - 1);
  for (size_t i = 0; i < hl; i++)
    if ((unsigned char)h[i] <= ' ' || h[i] == '@')
      return berth_errf(err, BERTH_E_CONFIG,
                        "'%.200s': bad character in "
                        "the host",
                        url);
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = 80;
  if (*after == ':') {
    unsigned long v = 0;
    const char *q = after + 1;
    size_t digits = 0;
    while (*q >= '0' && *q <= '9' && digits < 6) {
      v = v * 10 + (unsigned long)(*q - '0');
      q++;
      digits++;
    }
    if (digits == 0 || v == 0 || v > 65535)
      return berth_errf(err, BERTH_E_CONFIG, "'%.200s': bad port", url);
    *port = (uint16_t)v;
    after = q;
  }
  if (*after != '\0' && *after != '/')
    return berth_errf(err, BERTH_E_CONFIG,
                      "'%.200s': expected a path "
                      "after host:port",
                      url);
  const char *pth =
      (*after == '\0' || strcmp(after, "/") == 0) ? "/v1/traces" : after;
  size_t pl = strlen(pth);
  if (pl >= path_cap)
    return berth_errf(err, BERTH_E_CONFIG,
                      "'%.200s': path longer than %zu "
                      "bytes",
                      url, path_cap - 1);
  for (size_t i = 0; i < pl; i++)
    if ((unsigned char)pth[i] <= ' ' || (unsigned char)pth[i] >= 0x7f ||
        pth[i] == '#')
      return berth_errf(err, BERTH_E_CONFIG,
                        "'%.200s': bad character in "
                        "the path",
                        url);
  memcpy(path, pth, pl + 1);
  return BERTH_OK;
}
