/* Berth engine: the dashboard's static files, compiled into berthd.
 *
 * The table is generated at build time by engine/ui/embed.py from the files
 * in engine/ui/ and Debian's Chart.js (libjs-chart.js); see
 * engine/ui/meson.build. Nothing is read from disk at run time.
 */
#ifndef BERTH_UI_ASSETS_H
#define BERTH_UI_ASSETS_H

#include <stddef.h>

typedef struct berth_ui_asset {
  const char *path; /* the URL path, e.g. "/ui/app.js" */
  const char *content_type;
  const unsigned char *data; /* static */
  size_t len;
  const char *etag; /* quoted, from the content's SHA-256 */
} berth_ui_asset;

extern const berth_ui_asset berth_ui_assets[];
extern const size_t berth_ui_n_assets;

#endif
