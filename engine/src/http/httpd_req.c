/* Berth engine: HTTP request objects shared by HTTP/1.1 (server_h1.c) and
 * HTTP/2 (http2.c): construction, accessors, references, answering.
 *
 * A request's memory is two blocks, both freed in req_free when the last
 * reference goes: the request itself, followed in the same allocation by
 * `mem` (the field table and every string of the head), and `body`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http2.h"
#include "httpd.h"

struct berth_note_block {
  struct berth_note_block *next;
  char text[];
};

static void req_free(berth_http_req *r) {
  free(r->body); /* mem lies in r's own block */
  while (r->note_heap != NULL) {
    struct berth_note_block *b = r->note_heap;
    r->note_heap = b->next;
    free(b);
  }
  free(r);
}

berth_http_req *berth_httpd_req_new(const berth_httpd_req_init *in) {
  size_t size = in->n_fields * sizeof(berth_h1_header);
  size += in->method_len + 1 + in->target_len + 1;
  for (size_t i = 0; i < in->n_fields; i++) {
    size_t add = in->fields[i].name_len + in->fields[i].value_len + 2;
    if (add > SIZE_MAX - size) {
      free(in->body);
      return NULL;
    }
    size += add;
  }
  /* one block: the request, then mem (sizeof *r keeps mem aligned for the
   * field table) */
  if (size > SIZE_MAX - sizeof(berth_http_req)) {
    free(in->body);
    return NULL;
  }
  berth_http_req *r = malloc(sizeof *r + size);
  if (r == NULL) {
    free(in->body);
    return NULL;
  }
  memset(r, 0, sizeof *r);
  char *mem = (char *)(r + 1);
  r->mem = mem;
  r->refs = 1;
  r->version = in->version;
  r->fields = (berth_h1_header *)(void *)mem;
  r->n_fields = in->n_fields;
  char *p = mem + in->n_fields * sizeof(berth_h1_header);

  memcpy(p, in->method, in->method_len);
  p[in->method_len] = '\0';
  r->method = p;
  r->method_len = in->method_len;
  p += in->method_len + 1;

  memcpy(p, in->target, in->target_len);
  p[in->target_len] = '\0';
  const char *q = memchr(p, '?', in->target_len);
  r->path = p;
  r->path_len = q != NULL ? (size_t)(q - p) : in->target_len;
  if (q != NULL) {
    r->query = q + 1;
    r->query_len = in->target_len - r->path_len - 1;
  }
  p += in->target_len + 1;

  for (size_t i = 0; i < in->n_fields; i++) {
    const berth_h1_header *f = &in->fields[i];
    berth_h1_header *d = &r->fields[i];
    for (size_t k = 0; k < f->name_len; k++) {
      char ch = f->name[k];
      p[k] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    p[f->name_len] = '\0';
    d->name = p;
    d->name_len = f->name_len;
    p += f->name_len + 1;
    memcpy(p, f->value, f->value_len);
    p[f->value_len] = '\0';
    d->value = p;
    d->value_len = f->value_len;
    p += f->value_len + 1;
  }

  r->body = in->body_len > 0 ? in->body : NULL;
  if (in->body_len == 0)
    free(in->body);
  r->body_len = in->body_len;
  size_t pl = strlen(in->peer);
  if (pl >= sizeof r->peer)
    pl = sizeof r->peer - 1;
  memcpy(r->peer, in->peer, pl);
  r->peer[pl] = '\0';
  r->received_ns = uv_hrtime();
  r->respond = in->respond;
  r->link = in->link;
  return r;
}

void berth_httpd_req_release(berth_http_req *r) {
  r->link = NULL;
  r->respond = NULL;
  berth_http_req_unref(r);
}

void berth_httpd_req_gone(berth_http_req *r) {
  if (r->gone)
    return;
  r->gone = true;
  r->link = NULL;
  r->respond = NULL;
  if (!r->answered && r->on_gone != NULL) {
    void (*cb)(berth_http_req *, void *) = r->on_gone;
    r->on_gone = NULL;
    cb(r, r->on_gone_arg); /* our reference keeps r alive through this */
  }
  berth_http_req_unref(r);
}

/* ---- public API (httpd.h) ---- */

void berth_http_req_ref(berth_http_req *r) { r->refs++; }

void berth_http_req_unref(berth_http_req *r) {
  if (r == NULL || r->refs <= 0)
    return;
  if (--r->refs == 0)
    req_free(r);
}

bool berth_http_req_is_gone(const berth_http_req *r) { return r->gone; }

void berth_http_req_on_gone(berth_http_req *r,
                            void (*cb)(berth_http_req *, void *), void *arg) {
  r->on_gone = cb;
  r->on_gone_arg = arg;
}

void berth_http_req_set_user(berth_http_req *r, void *user) { r->user = user; }

void *berth_http_req_user(const berth_http_req *r) { return r->user; }

void berth_http_req_set_note(berth_http_req *r, berth_http_note which,
                             const char *s, size_t len) {
  if ((unsigned)which >= BERTH_HTTP_NOTE_COUNT)
    return;
  if (len > BERTH_HTTP_NOTE_MAX)
    len = BERTH_HTTP_NOTE_MAX;
  const char *nul = len > 0 ? memchr(s, '\0', len) : NULL;
  if (nul != NULL)
    len = (size_t)(nul - s); /* the note is a C string */
  if (len == 0) {
    r->notes[which] = NULL;
    return;
  }
  char *p;
  if (len + 1 <= sizeof r->note_mem - r->note_used) {
    p = r->note_mem + r->note_used;
    r->note_used += len + 1;
  } else {
    struct berth_note_block *b = malloc(sizeof *b + len + 1);
    if (b == NULL) {
      r->notes[which] = NULL; /* a note is best effort: no memory, none */
      return;
    }
    b->next = r->note_heap;
    r->note_heap = b;
    p = b->text;
  }
  memcpy(p, s, len);
  p[len] = '\0';
  r->notes[which] = p;
}

const char *berth_http_req_note(const berth_http_req *r,
                                berth_http_note which) {
  if ((unsigned)which >= BERTH_HTTP_NOTE_COUNT)
    return NULL;
  return r->notes[which];
}

void berth_http_respond_take(berth_http_req *r, int status,
                             const berth_http_header_kv *headers, size_t n,
                             char *body, size_t body_len) {
  if (r->answered || r->gone || r->respond == NULL) {
    free(body);
    return;
  }
  r->answered = true;
  if (body_len == 0) {
    free(body);
    body = NULL;
  }
  r->respond(r, status, headers, n, body, body_len);
}

void berth_http_respond(berth_http_req *r, int status,
                        const berth_http_header_kv *headers, size_t n,
                        const char *body, size_t body_len) {
  if (r->answered || r->gone || r->respond == NULL)
    return;
  char *copy = NULL;
  if (body_len > 0) {
    copy = malloc(body_len);
    if (copy == NULL) {
      static const berth_http_header_kv none[1] = {{NULL, NULL}};
      berth_http_respond_take(r, 503, none, 0, NULL, 0);
      return;
    }
    memcpy(copy, body, body_len);
  }
  berth_http_respond_take(r, status, headers, n, copy, body_len);
}

const char *berth_http_method(const berth_http_req *r, size_t *len) {
  if (len != NULL)
    *len = r->method_len;
  return r->method;
}

const char *berth_http_path(const berth_http_req *r, size_t *len) {
  if (len != NULL)
    *len = r->path_len;
  return r->path;
}

const char *berth_http_query(const berth_http_req *r, size_t *len) {
  if (len != NULL)
    *len = r->query != NULL ? r->query_len : 0;
  return r->query;
}

const char *berth_http_header(const berth_http_req *r, const char *name,
                              size_t *len) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < r->n_fields; i++) {
    const berth_h1_header *f = &r->fields[i];
    if (f->name_len == nl && strncasecmp(f->name, name, nl) == 0) {
      if (len != NULL)
        *len = f->value_len;
      return f->value;
    }
  }
  if (len != NULL)
    *len = 0;
  return NULL;
}

size_t berth_http_header_count(const berth_http_req *r) { return r->n_fields; }

void berth_http_header_at(const berth_http_req *r, size_t i, const char **name,
                          size_t *name_len, const char **value,
                          size_t *value_len) {
  const berth_h1_header *f = &r->fields[i];
  *name = f->name;
  *name_len = f->name_len;
  *value = f->value;
  *value_len = f->value_len;
}

const char *berth_http_body(const berth_http_req *r, size_t *len) {
  if (len != NULL)
    *len = r->body_len;
  return r->body != NULL ? r->body : "";
}

void berth_http_req_replace_body(berth_http_req *r, char *body, size_t len) {
  free(r->body);
  r->body = len > 0 ? body : NULL;
  if (len == 0)
    free(body);
  r->body_len = len;
}

int berth_http_version(const berth_http_req *r) { return r->version; }

const char *berth_http_peer(const berth_http_req *r) { return r->peer; }

uint64_t berth_http_received_ns(const berth_http_req *r) {
  return r->received_ns;
}
