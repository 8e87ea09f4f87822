/* Berth engine: YAML (and therefore JSON) text to a jansson tree.
 *
 * libyaml's event parser drives a small recursive builder: mappings become
 * objects, sequences arrays, scalars strings or typed values. Plain (unquoted)
 * scalars are typed by the YAML 1.2 core schema: null, bool, int (decimal,
 * 0o octal, 0x hex), float, else string; quoted and block scalars are always
 * strings. What a config file has no use for is refused with a message rather
 * than guessed at: anchors and aliases, tags other than !!str/!!seq/!!map,
 * duplicate keys, non-scalar keys, more than one document, nesting deeper
 * than BERTH_YAML_MAX_DEPTH, and .inf/.nan (JSON cannot hold them). Every
 * error names its place as "line L, column C: ...".
 */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config.h"

#define BERTH_YAML_MAX_DEPTH 64

typedef struct berth_yaml_reader {
  yaml_parser_t parser;
  yaml_event_t event; /* the current event, valid while have_event */
  bool have_event;
  berth_errmsg *err;
} berth_yaml_reader;

/* Error at the current event's start, "line L, column C: ...". Returns NULL
 * so that builders can `return berth_yaml_fail(...)`. */
__attribute__((format(printf, 2, 3))) static json_t *
berth_yaml_fail(berth_yaml_reader *r, const char *fmt, ...) {
  if (r->err == NULL)
    return NULL;
  size_t line = r->event.start_mark.line + 1;
  size_t col = r->event.start_mark.column + 1;
  int n = snprintf(r->err->msg, sizeof r->err->msg,
                   "line %zu, column %zu: ", line, col);
  if (n < 0 || (size_t)n >= sizeof r->err->msg)
    return NULL;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err->msg + n, sizeof r->err->msg - (size_t)n, fmt, ap);
  va_end(ap);
  return NULL;
}

static void berth_yaml_parser_error(berth_yaml_reader *r) {
  const yaml_parser_t *p = &r->parser;
  const char *problem = p->problem != NULL ? p->problem : "malformed YAML";
  switch (p->error) {
  case YAML_MEMORY_ERROR:
    berth_errf(r->err, BERTH_E_NOMEM, "out of memory reading YAML");
    return;
  case YAML_READER_ERROR:
    berth_errf(r->err, BERTH_E_CONFIG, "byte offset %zu: %s", p->problem_offset,
               problem);
    return;
  default:
    break;
  }
  if (p->context != NULL)
    berth_errf(r->err, BERTH_E_CONFIG,
               "line %zu, column %zu: %s (%s at line %zu, column %zu)",
               p->problem_mark.line + 1, p->problem_mark.column + 1, problem,
               p->context, p->context_mark.line + 1,
               p->context_mark.column + 1);
  else
    berth_errf(r->err, BERTH_E_CONFIG, "line %zu, column %zu: %s",
               p->problem_mark.line + 1, p->problem_mark.column + 1, problem);
}

/* Replaces the current event by the next one; false (err set) on failure. */
static bool berth_yaml_next(berth_yaml_reader *r) {
  if (r->have_event) {
    yaml_event_delete(&r->event);
    r->have_event = false;
  }
  if (!yaml_parser_parse(&r->parser, &r->event)) {
    berth_yaml_parser_error(r);
    return false;
  }
  r->have_event = true;
  return true;
}

static bool berth_yaml_is(const char *s, size_t n, const char *word) {
  return strlen(word) == n && memcmp(s, word, n) == 0;
}

static bool berth_yaml_any_of(const char *s, size_t n,
                              const char *const *words) {
  for (size_t i = 0; words[i] != NULL; i++)
    if (berth_yaml_is(s, n, words[i]))
      return true;
  return false;
}

static bool berth_yaml_digits(const char *s, size_t n, int base) {
  if (n == 0)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    bool ok;
    if (base == 8)
      ok = c >= '0' && c <= '7';
    else if (base == 10)
      ok = c >= '0' && c <= '9';
    else
      ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
    if (!ok)
      return false;
  }
  return true;
}

/* Digits (already checked) to a magnitude <= limit; false on overflow. */
static bool berth_yaml_accumulate(const char *s, size_t n, int base,
                                  uint64_t limit, uint64_t *out) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    unsigned d =
        c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
    if (v > (limit - d) / (uint64_t)base)
      return false;
    v = v * (uint64_t)base + d;
  }
  *out = v;
  return true;
}

/* Core schema float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool berth_yaml_is_float(const char *s, size_t n) {
  size_t i = 0, mant = 0;
  if (i < n && (s[i] == '-' || s[i] == '+'))
    i++;
  while (i < n && s[i] >= '0' && s[i] <= '9')
    i++, mant++;
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, mant++;
  }
  if (mant == 0)
    return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '-' || s[i] == '+'))
      i++;
    size_t exp = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
      i++, exp++;
    if (exp == 0)
      return false;
  }
  return i == n;
}

static json_t *berth_yaml_new(berth_yaml_reader *r, json_t *v) {
  if (v == NULL)
    berth_errf(r->err, BERTH_E_NOMEM, "out of memory building the tree");
  return v;
}

static json_t *berth_yaml_string(berth_yaml_reader *r, const char *s,
                                 size_t n) {
  json_t *v = json_stringn(s, n);
  if (v == NULL) /* libyaml hands out valid UTF-8, so this is memory */
    berth_errf(r->err, BERTH_E_NOMEM, "out of memory building the tree");
  return v;
}

static json_t *berth_yaml_plain(berth_yaml_reader *r, const char *s, size_t n) {
  static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
  static const char *const trues[] = {"true", "True", "TRUE", NULL};
  static const char *const falses[] = {"false", "False", "FALSE", NULL};
  static const char *const infs[] = {".inf", ".Inf", ".INF", NULL};
  static const char *const nans[] = {".nan", ".NaN", ".NAN", NULL};

  if (berth_yaml_any_of(s, n, nulls))
    return berth_yaml_new(r, json_null());
  if (berth_yaml_any_of(s, n, trues))
    return berth_yaml_new(r, json_true());
  if (berth_yaml_any_of(s, n, falses))
    return berth_yaml_new(r, json_false());

  /* Integers: 0o17, 0x1f, [-+]?[0-9]+. */
  int base = 0;
  size_t skip = 0;
  bool neg = false;
  if (n > 2 && s[0] == '0' && s[1] == 'o' && berth_yaml_digits(s + 2, n - 2, 8))
    base = 8, skip = 2;
  else if (n > 2 && s[0] == '0' && s[1] == 'x' &&
           berth_yaml_digits(s + 2, n - 2, 16))
    base = 16, skip = 2;
  else {
    if (n > 0 && (s[0] == '-' || s[0] == '+'))
      neg = s[0] == '-', skip = 1;
    if (berth_yaml_digits(s + skip, n - skip, 10))
      base = 10;
  }
  if (base != 0) {
    uint64_t mag;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    if (!berth_yaml_accumulate(s + skip, n - skip, base, limit, &mag))
      return berth_yaml_fail(r, "integer %.*s is out of range",
                             (int)(n > 40 ? 40 : n), s);
    json_int_t v =
        neg ? (mag == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(json_int_t)mag)
            : (json_int_t)mag;
    return berth_yaml_new(r, json_integer(v));
  }

  if (berth_yaml_any_of(s, n, nans) ||
      (n > 1 && (s[0] == '-' || s[0] == '+') &&
       berth_yaml_any_of(s + 1, n - 1, infs)) ||
      berth_yaml_any_of(s, n, infs))
    return berth_yaml_fail(r,
                           "%.*s cannot be represented (JSON numbers are "
                           "finite)",
                           (int)n, s);

  if (berth_yaml_is_float(s, n)) {
    char *copy = malloc(n + 1);
    if (copy == NULL)
      return berth_yaml_new(r, NULL);
    memcpy(copy, s, n);
    copy[n] = '\0';
    double d = strtod(copy, NULL);
    free(copy);
    if (!isfinite(d))
      return berth_yaml_fail(r, "number %.*s is out of range",
                             (int)(n > 40 ? 40 : n), s);
    return berth_yaml_new(r, json_real(d));
  }
  return berth_yaml_string(r, s, n);
}

static json_t *berth_yaml_scalar(berth_yaml_reader *r) {
  const yaml_event_t *e = &r->event;
  const char *s = (const char *)e->data.scalar.value;
  size_t n = e->data.scalar.length;
  const char *tag = (const char *)e->data.scalar.tag;
  if (tag != NULL) {
    if (strcmp(tag, "!") != 0 && strcmp(tag, YAML_STR_TAG) != 0)
      return berth_yaml_fail(r, "tag %.60s is not supported", tag);
    return berth_yaml_string(r, s, n);
  }
  if (e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
    return berth_yaml_string(r, s, n);
  return berth_yaml_plain(r, s, n);
}

static json_t *berth_yaml_node(berth_yaml_reader *r, int depth);

static json_t *berth_yaml_sequence(berth_yaml_reader *r, int depth) {
  json_t *arr = berth_yaml_new(r, json_array());
  if (arr == NULL)
    return NULL;
  for (;;) {
    if (!berth_yaml_next(r))
      goto fail;
    if (r->event.type == YAML_SEQUENCE_END_EVENT)
      return arr;
    json_t *item = berth_yaml_node(r, depth + 1);
    if (item == NULL)
      goto fail;
    if (json_array_append_new(arr, item) != 0) {
      berth_yaml_new(r, NULL);
      goto fail;
    }
  }
fail:
  json_decref(arr);
  return NULL;
}

static json_t *berth_yaml_mapping(berth_yaml_reader *r, int depth) {
  json_t *obj = berth_yaml_new(r, json_object());
  char *key = NULL;
  if (obj == NULL)
    return NULL;
  for (;;) {
    if (!berth_yaml_next(r))
      goto fail;
    if (r->event.type == YAML_MAPPING_END_EVENT)
      return obj;
    if (r->event.type == YAML_ALIAS_EVENT) {
      berth_yaml_fail(r, "aliases (*name) are not supported");
      goto fail;
    }
    if (r->event.type != YAML_SCALAR_EVENT) {
      berth_yaml_fail(r, "mapping keys must be scalars");
      goto fail;
    }
    if (r->event.data.scalar.anchor != NULL) {
      berth_yaml_fail(r, "anchors (&name) are not supported");
      goto fail;
    }
    const char *s = (const char *)r->event.data.scalar.value;
    size_t n = r->event.data.scalar.length;
    if (memchr(s, '\0', n) != NULL) {
      berth_yaml_fail(r, "mapping keys may not contain NUL");
      goto fail;
    }
    if (json_object_getn(obj, s, n) != NULL) {
      berth_yaml_fail(r, "duplicate key \"%.*s\"", (int)(n > 64 ? 64 : n), s);
      goto fail;
    }
    key = malloc(n + 1);
    if (key == NULL) {
      berth_yaml_new(r, NULL);
      goto fail;
    }
    memcpy(key, s, n);
    key[n] = '\0';
    if (!berth_yaml_next(r))
      goto fail;
    json_t *value = berth_yaml_node(r, depth + 1);
    if (value == NULL)
      goto fail;
    if (json_object_setn_new(obj, key, n, value) != 0) {
      berth_yaml_new(r, NULL);
      goto fail;
    }
    free(key);
    key = NULL;
  }
fail:
  free(key);
  json_decref(obj);
  return NULL;
}

/* Builds the node whose start event is current; on return the current event
 * is the node's last one. */
static json_t *berth_yaml_node(berth_yaml_reader *r, int depth) {
  const yaml_event_t *e = &r->event;
  const char *tag = NULL, *want = NULL;
  switch (e->type) {
  case YAML_ALIAS_EVENT:
    return berth_yaml_fail(r, "aliases (*%.60s) are not supported",
                           (const char *)e->data.alias.anchor);
  case YAML_SCALAR_EVENT:
    if (e->data.scalar.anchor != NULL)
      return berth_yaml_fail(r, "anchors (&name) are not supported");
    return berth_yaml_scalar(r);
  case YAML_SEQUENCE_START_EVENT:
    if (e->data.sequence_start.anchor != NULL)
      return berth_yaml_fail(r, "anchors (&name) are not supported");
    tag = (const char *)e->data.sequence_start.tag;
    want = YAML_SEQ_TAG;
    break;
  case YAML_MAPPING_START_EVENT:
    if (e->data.mapping_start.anchor != NULL)
      return berth_yaml_fail(r, "anchors (&name) are not supported");
    tag = (const char *)e->data.mapping_start.tag;
    want = YAML_MAP_TAG;
    break;
  default:
    return berth_yaml_fail(r, "unexpected YAML event");
  }
  if (tag != NULL && strcmp(tag, "!") != 0 && strcmp(tag, want) != 0)
    return berth_yaml_fail(r, "tag %.60s is not supported", tag);
  if (depth > BERTH_YAML_MAX_DEPTH)
    return berth_yaml_fail(r, "nesting deeper than %d levels",
                           BERTH_YAML_MAX_DEPTH);
  if (e->type == YAML_SEQUENCE_START_EVENT)
    return berth_yaml_sequence(r, depth);
  return berth_yaml_mapping(r, depth);
}

static json_t *berth_yaml_document(berth_yaml_reader *r) {
  if (!berth_yaml_next(r)) /* STREAM-START */
    return NULL;
  if (!berth_yaml_next(r))
    return NULL;
  if (r->event.type == YAML_STREAM_END_EVENT)
    return berth_yaml_fail(r, "the document is empty");
  if (r->event.type != YAML_DOCUMENT_START_EVENT)
    return berth_yaml_fail(r, "expected a document");
  if (!berth_yaml_next(r))
    return NULL;
  json_t *root = berth_yaml_node(r, 1);
  if (root == NULL)
    return NULL;
  if (!berth_yaml_next(r)) /* DOCUMENT-END */
    goto fail;
  if (!berth_yaml_next(r))
    goto fail;
  if (r->event.type != YAML_STREAM_END_EVENT) {
    berth_yaml_fail(r, "only one document is allowed");
    goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

json_t *berth_yaml_load(const char *text, size_t len, berth_errmsg *err) {
  berth_yaml_reader r;
  memset(&r, 0, sizeof r);
  r.err = err;
  if (text == NULL && len > 0) {
    berth_errf(err, BERTH_E_INVALID, "no text");
    return NULL;
  }
  if (!yaml_parser_initialize(&r.parser)) {
    berth_errf(err, BERTH_E_NOMEM, "out of memory starting the YAML parser");
    return NULL;
  }
  yaml_parser_set_input_string(&r.parser,
                               (const unsigned char *)(text ? text : ""), len);
  json_t *root = berth_yaml_document(&r);
  if (r.have_event)
    yaml_event_delete(&r.event);
  yaml_parser_delete(&r.parser);
  return root;
}
