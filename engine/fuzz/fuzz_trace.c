/* Fuzz target: the W3C traceparent parser (a header any client sends) and
 * the OTLP endpoint URL splitter, and the reader of the collector's HTTP
 * answer. A header that parses must format back to
 * the same ids and flags, and (version 00) to the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "otlp_export.h"
#include "http_url.h"
#include "trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  berth_traceparent tp, again;
  const char *s = (const char *)data;
  if (berth_traceparent_parse(s, size, &tp) == BERTH_OK) {
    char text[BERTH_TRACEPARENT_LEN + 1];
    berth_traceparent_format(&tp, text);
    if (berth_traceparent_parse(text, BERTH_TRACEPARENT_LEN, &again) !=
            BERTH_OK ||
        memcmp(&tp, &again, sizeof tp) != 0)
      __builtin_trap();
    size_t off = 0, n = size;
    while (n > 0 && (s[off] == ' ' || s[off] == '\t')) {
      off++;
      n--;
    }
    if (memcmp(s + off, "00", 2) == 0 &&
        memcmp(s + off, text, BERTH_TRACEPARENT_LEN) != 0)
      __builtin_trap();
  }
  /* the collector's answer */
  bool complete = false;
  int code = berth_otlp_http_answer(s, size, &complete);
  if (code < -1 || code > 999 || (complete && code < 0))
    __builtin_trap();
  /* the URL splitter takes a NUL-terminated string */
  char *url = malloc(size + 1);
  if (url == NULL)
    return 0;
  memcpy(url, data, size);
  url[size] = '\0';
  char host[256], path[1024];
  uint16_t port = 0;
  berth_errmsg err;
  if (berth_http_parse_url(url, host, sizeof host, &port, path, sizeof path,
                           &err) == BERTH_OK) {
    if (port == 0 || strlen(host) == 0 || path[0] != '/')
      __builtin_trap();
  } else if (memchr(err.msg, '\0', sizeof err.msg) == NULL) {
    __builtin_trap();
  }
  free(url);
  return 0;
}
