/* Berth engine: TLS through OpenSSL memory BIOs (see tls.h). */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct berth_tls_ctx {
  SSL_CTX *ssl;
  bool alpn_h2;
  bool h2_only;
};

struct berth_tls_conn {
  SSL *ssl;
  BIO *rbio; /* ciphertext from the peer, owned by ssl */
  BIO *wbio; /* ciphertext to the peer, owned by ssl */
  bool ready;
};

static void openssl_reason(char *out, size_t cap) {
  unsigned long e = ERR_get_error();
  if (e == 0) {
    snprintf(out, cap, "unknown OpenSSL error");
    return;
  }
  ERR_error_string_n(e, out, cap);
  ERR_clear_error();
}

/* ALPN wire format: length-prefixed names. */
static const unsigned char alpn_h2_h1[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h1[] = "\x08http/1.1";
static const unsigned char alpn_h2_only[] = "\x02h2";

static int select_alpn(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  berth_tls_ctx *ctx = arg;
  (void)ssl;
  const unsigned char *ours = ctx->h2_only   ? alpn_h2_only
                              : ctx->alpn_h2 ? alpn_h2_h1
                                             : alpn_h1;
  unsigned int ours_len = ctx->h2_only   ? sizeof alpn_h2_only - 1
                          : ctx->alpn_h2 ? sizeof alpn_h2_h1 - 1
                                         : sizeof alpn_h1 - 1;
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, ours, ours_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK; /* no overlap: go on without ALPN */
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

int berth_tls_ctx_new(const char *cert_path, const char *key_path, bool alpn_h2,
                      bool h2_only, berth_tls_ctx **out, berth_errmsg *err) {
  char why[256];
  *out = NULL;
  berth_tls_ctx *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL)
    return berth_errf(err, BERTH_E_NOMEM, "out of memory");
  ctx->alpn_h2 = alpn_h2;
  ctx->h2_only = h2_only;
  ctx->ssl = SSL_CTX_new(TLS_server_method());
  if (ctx->ssl == NULL) {
    free(ctx);
    openssl_reason(why, sizeof why);
    return berth_errf(err, BERTH_E_CONFIG, "TLS setup failed: %s", why);
  }
  SSL_CTX_set_min_proto_version(ctx->ssl, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx->ssl, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cert_path) != 1) {
    openssl_reason(why, sizeof why);
    berth_tls_ctx_free(ctx);
    return berth_errf(err, BERTH_E_CONFIG, "cannot use TLS certificate %s: %s",
                      cert_path, why);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx->ssl, key_path, SSL_FILETYPE_PEM) != 1) {
    openssl_reason(why, sizeof why);
    berth_tls_ctx_free(ctx);
    return berth_errf(err, BERTH_E_CONFIG, "cannot use TLS key %s: %s",
                      key_path, why);
  }
  if (SSL_CTX_check_private_key(ctx->ssl) != 1) {
    berth_tls_ctx_free(ctx);
    return berth_errf(err, BERTH_E_CONFIG,
                      "TLS key %s does not match certificate %s", key_path,
                      cert_path);
  }
  SSL_CTX_set_alpn_select_cb(ctx->ssl, select_alpn, ctx);
  *out = ctx;
  return BERTH_OK;
}

void berth_tls_ctx_free(berth_tls_ctx *ctx) {
  if (ctx == NULL)
    return;
  SSL_CTX_free(ctx->ssl);
  free(ctx);
}

berth_tls_conn *berth_tls_conn_new(berth_tls_ctx *ctx) {
  berth_tls_conn *c = calloc(1, sizeof *c);
  if (c == NULL)
    return NULL;
  c->ssl = SSL_new(ctx->ssl);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
    SSL_free(c->ssl);
    free(c);
    return NULL;
  }
  SSL_set_bio(c->ssl, c->rbio, c->wbio); /* ssl owns both now */
  SSL_set_accept_state(c->ssl);
  return c;
}

void berth_tls_conn_free(berth_tls_conn *c) {
  if (c == NULL)
    return;
  SSL_free(c->ssl);
  free(c);
}

/* Moves whatever OpenSSL wrote into cipher_out. */
static int drain_wbio(berth_tls_conn *c, berth_buf *cipher_out) {
  char tmp[16384];
  int n;
  while ((n = BIO_read(c->wbio, tmp, sizeof tmp)) > 0) {
    int rc = berth_buf_append(cipher_out, tmp, (size_t)n);
    if (rc != BERTH_OK)
      return rc;
  }
  return BERTH_OK;
}

int berth_tls_feed(berth_tls_conn *c, const char *data, size_t len,
                   berth_buf *plain, berth_buf *cipher_out, berth_errmsg *err) {
  char why[256];
  size_t off = 0;
  while (off < len) {
    int w = BIO_write(c->rbio, data + off,
                      (int)(len - off > 1 << 30 ? 1 << 30 : len - off));
    if (w <= 0)
      return berth_errf(err, BERTH_E_NOMEM, "TLS: cannot buffer input");
    off += (size_t)w;
  }
  if (!c->ready) {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      drain_wbio(c, cipher_out);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return BERTH_OK;
      openssl_reason(why, sizeof why);
      return berth_errf(err, BERTH_E_PARSE, "TLS handshake failed: %s", why);
    }
    c->ready = true;
  }
  for (;;) {
    char *dst = berth_buf_reserve(plain, 16384);
    if (dst == NULL)
      return berth_errf(err, BERTH_E_TOO_LARGE, "TLS: too much buffered input");
    int n = SSL_read(c->ssl, dst, 16384);
    if (n > 0) {
      berth_buf_commit(plain, (size_t)n);
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    drain_wbio(c, cipher_out);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ||
        e == SSL_ERROR_ZERO_RETURN)
      return BERTH_OK;
    openssl_reason(why, sizeof why);
    return berth_errf(err, BERTH_E_PARSE, "TLS error: %s", why);
  }
}

int berth_tls_write(berth_tls_conn *c, const char *data, size_t len,
                    berth_buf *cipher_out, berth_errmsg *err) {
  size_t off = 0;
  while (off < len) {
    size_t chunk = len - off > 1 << 20 ? 1 << 20 : len - off;
    int n = SSL_write(c->ssl, data + off, (int)chunk);
    if (n <= 0) {
      char why[256];
      openssl_reason(why, sizeof why);
      return berth_errf(err, BERTH_E_IO, "TLS write failed: %s", why);
    }
    off += (size_t)n;
    int rc = drain_wbio(c, cipher_out);
    if (rc != BERTH_OK)
      return berth_errf(err, rc, "TLS: output too large");
  }
  return BERTH_OK;
}

void berth_tls_shutdown(berth_tls_conn *c, berth_buf *cipher_out) {
  if (c->ready)
    SSL_shutdown(c->ssl);
  drain_wbio(c, cipher_out);
}

bool berth_tls_ready(const berth_tls_conn *c) { return c->ready; }

const char *berth_tls_alpn(const berth_tls_conn *c) {
  const unsigned char *p = NULL;
  unsigned int n = 0;
  SSL_get0_alpn_selected(c->ssl, &p, &n);
  if (p == NULL || n == 0)
    return NULL;
  if (n == 2 && memcmp(p, "h2", 2) == 0)
    return "h2";
  if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
    return "http/1.1";
  return NULL;
}
