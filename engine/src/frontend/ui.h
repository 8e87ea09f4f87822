/* Berth engine: the web dashboard on the REST port (docs/dashboard.md).
 *
 *   GET /ui                 the page (also /ui/)
 *   GET /ui/<asset>         its script, style and Chart.js, from a fixed
 *                           table compiled into berthd (ui_assets.h); no
 *                           path from the URL ever reaches the file system
 *   GET /ui/api/state       JSON: server, model versions with their state,
 *                           workers and queue, five minutes of one-second
 *                           samples per version, the recent errors
 *
 * The engine samples every model version once a second (a timer on the
 * loop) into fixed-size histories, and notes every failed inference request
 * in a bounded ring (ui_stats.h). With tokens configured every /ui path
 * needs one, as a bearer token or as the password of HTTP Basic
 * authentication, which a browser asks for by itself.
 *
 * Ownership: the engine owns its berth_ui (engine->ui), made by
 * berth_ui_init, its timer closed by berth_ui_close, freed by berth_ui_free
 * after the loop has stopped. Everything runs on the loop thread.
 */
#ifndef BERTH_UI_H
#define BERTH_UI_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

typedef struct berth_ui berth_ui;

/* The dashboard's module (main.c's list): berth_ui_init, _close, _free. */
extern const berth_module berth_ui_module;

/* Makes e->ui, starts sampling, and registers the observer that notes
 * failed requests. */
int berth_ui_init(berth_engine *e, berth_errmsg *err);
/* Stops sampling and closes the timer (no-op when e->ui is NULL). */
void berth_ui_close(berth_engine *e);
/* Frees e->ui (after the loop has run the timer's close). */
void berth_ui_free(berth_engine *e);

/* Notes a failed inference request of m for the dashboard's recent errors
 * (msg may be NULL). */
void berth_ui_note_error(berth_model *m, berth_protocol protocol, int status,
                         const char *msg);

/* true when path (len bytes, no query) is one of the dashboard's: "/ui" or
 * anything below "/ui/". */
bool berth_ui_route(const char *path, size_t len);
/* Answers a request for a dashboard path, its token check included. */
void berth_ui_handle(berth_engine *e, berth_http_req *req);

/* The password of an "Authorization: Basic <base64(user:password)>" value
 * (len bytes), copied into out (cap bytes, NUL-terminated); false when the
 * value is not Basic, not valid base64, has no ':', or does not fit. */
bool berth_ui_basic_password(const char *header, size_t len, char *out,
                             size_t cap, size_t *out_len);

#endif
