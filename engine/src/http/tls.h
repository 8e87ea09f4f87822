/* Berth engine: TLS through OpenSSL memory BIOs, with no I/O of its own
 * (the nghttp2 idea: bytes in, bytes out). server.c feeds it the ciphertext
 * it reads from a socket and writes out the ciphertext it produces; the
 * plaintext goes to the HTTP/1.1 parser or the HTTP/2 session as usual.
 *
 * ALPN chooses "h2" or "http/1.1"; a client that offers neither still gets
 * a connection, and the first bytes decide as on cleartext (the HTTP/2
 * preface or an HTTP/1.1 request line).
 */
#ifndef BERTH_TLS_H
#define BERTH_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "berth/error.h"
#include "buf.h"

typedef struct berth_tls_ctx berth_tls_ctx;   /* one per listener */
typedef struct berth_tls_conn berth_tls_conn; /* one per connection */

/* Loads a PEM certificate chain and private key. ALPN offers "h2" and
 * "http/1.1" when alpn_h2, only "http/1.1" otherwise, only "h2" when
 * h2_only (gRPC). BERTH_E_CONFIG naming the file and OpenSSL's reason. */
int berth_tls_ctx_new(const char *cert_path, const char *key_path, bool alpn_h2,
                      bool h2_only, berth_tls_ctx **out, berth_errmsg *err);
void berth_tls_ctx_free(berth_tls_ctx *ctx);

/* A server-side connection state. NULL on allocation failure. The ctx must
 * outlive it. */
berth_tls_conn *berth_tls_conn_new(berth_tls_ctx *ctx);
void berth_tls_conn_free(berth_tls_conn *c);

/* Feeds len bytes of ciphertext. Appends decrypted application data to
 * plain and any bytes to send back (handshake, alerts) to cipher_out.
 * BERTH_E_PARSE on a TLS failure (err says why): the caller sends what is in
 * cipher_out (an alert) and closes. */
int berth_tls_feed(berth_tls_conn *c, const char *data, size_t len,
                   berth_buf *plain, berth_buf *cipher_out, berth_errmsg *err);

/* Encrypts len bytes of application data, appending the records to
 * cipher_out. Only after the handshake (berth_tls_ready). */
int berth_tls_write(berth_tls_conn *c, const char *data, size_t len,
                    berth_buf *cipher_out, berth_errmsg *err);

/* Appends a close_notify alert to cipher_out. */
void berth_tls_shutdown(berth_tls_conn *c, berth_buf *cipher_out);

bool berth_tls_ready(const berth_tls_conn *c);
/* The protocol ALPN selected ("h2", "http/1.1") or NULL. */
const char *berth_tls_alpn(const berth_tls_conn *c);

#endif
