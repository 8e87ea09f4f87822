/* Berth engine: the URLs of the HTTP clients the engine runs itself (the
 * OTLP trace exporter). No I/O. */
#ifndef BERTH_HTTP_URL_H
#define BERTH_HTTP_URL_H

#include <stddef.h>
#include <stdint.h>

#include "berth/error.h"

/* Splits "http://host[:port][/path]" (port 80 by default, path "/v1/traces"
 * when empty or "/"; IPv6 hosts in brackets). Fills host (cap bytes),
 * port, path (cap bytes). BERTH_E_CONFIG with a message. */
int berth_http_parse_url(const char *url, char *host, size_t host_cap,
                         uint16_t *port, char *path, size_t path_cap,
                         berth_errmsg *err);

#endif
