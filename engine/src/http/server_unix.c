/* Berth engine: the Unix domain socket listener of the HTTP server
 * transport (httpd.h, opts.socket_path): the path is checked (a stale
 * socket is replaced, anything else refused), the socket is created with
 * mode 0600, and removed at close only while it is still the one we made.
 * Connections on it are served by server.c like TCP ones.
 */
#include "httpd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server_int.h"

/* Clears the way for a Unix socket at path: nothing there, or a stale
 * socket (no process accepts on it), which is removed. */
static int unix_path_free(const char *path, berth_errmsg *err) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? BERTH_OK
                           : berth_errf(err, BERTH_E_CONFIG, "socket %s: %s",
                                        path, strerror(errno));
  if (!S_ISSOCK(st.st_mode))
    return berth_errf(err, BERTH_E_CONFIG,
                      "socket %s: the path exists and is "
                      "not a socket; not replacing it",
                      path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return berth_errf(err, BERTH_E_IO, "socket %s: %s", path, strerror(errno));
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  if (live)
    return berth_errf(err, BERTH_E_IO,
                      "socket %s: another process listens "
                      "on it",
                      path);
  if (unlink(path) != 0)
    return berth_errf(err, BERTH_E_IO,
                      "socket %s: cannot remove the stale "
                      "socket: %s",
                      path, strerror(errno));
  return BERTH_OK;
}

/* Binds and listens on opts.socket_path with mode 0600 (the umask covers
 * the moment between bind and chmod). */
int berth_server_unix_listen(berth_httpd *h, uv_connection_cb on_connection,
                             berth_errmsg *err) {
  const char *path = h->socket_path;
  if (strlen(path) >= sizeof((struct sockaddr_un *)0)->sun_path)
    return berth_errf(err, BERTH_E_CONFIG,
                      "socket %s: path longer than %zu "
                      "bytes",
                      path, sizeof((struct sockaddr_un *)0)->sun_path - 1);
  int rc = unix_path_free(path, err);
  if (rc != BERTH_OK)
    return rc;
  mode_t old = umask(0177);
  int uvrc = uv_pipe_bind(&h->listener_pipe, path);
  umask(old);
  if (uvrc != 0)
    return berth_errf(err, BERTH_E_IO, "socket %s: %s", path,
                      uv_strerror(uvrc));
  struct stat st;
  if (chmod(path, 0600) != 0 || lstat(path, &st) != 0)
    return berth_errf(err, BERTH_E_IO, "socket %s: %s", path, strerror(errno));
  h->socket_dev = (uint64_t)st.st_dev;
  h->socket_ino = (uint64_t)st.st_ino;
  uvrc = uv_listen((uv_stream_t *)&h->listener_pipe, 511, on_connection);
  if (uvrc != 0) {
    unlink(path);
    return berth_errf(err, BERTH_E_IO, "socket %s: %s", path,
                      uv_strerror(uvrc));
  }
  return BERTH_OK;
}

/* Removes the socket file if it is still the one we created. */
void berth_server_unix_unlink(berth_httpd *h) {
  struct stat st;
  if (!h->is_unix || h->socket_path == NULL || lstat(h->socket_path, &st) != 0)
    return;
  if ((uint64_t)st.st_dev == h->socket_dev &&
      (uint64_t)st.st_ino == h->socket_ino)
    unlink(h->socket_path);
}
