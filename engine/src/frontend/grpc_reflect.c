/* Berth engine: gRPC server reflection, ServerReflectionInfo of
 * grpc.reflection.v1 and v1alpha (grpc_reflect.h).
 *
 * Each request message gets one response message, in order: the services
 * served (list_services), a file's FileDescriptorProto and those of the
 * files it imports (file_by_filename, file_containing_symbol), or an
 * error_response with NOT_FOUND for an unknown file or symbol and for
 * extensions (Berth's protos are proto3 and declare none;
 * all_extension_numbers_of_type of a known message answers an empty list).
 * The two packages' messages are the same on the wire, so the v1 types
 * serve both. */
#include "grpc_reflect.h"

#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "grpc.h"
#include "reflection_v1.pb-c.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest request;
typedef Grpc__Reflection__V1__ServerReflectionResponse response;

#define CASE(x)                                                                \
  GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_##x
/* The char array text, formatted. */
#define FMT(text, ...) (snprintf(text, sizeof text, __VA_ARGS__), text)
#define ANSWER(x)                                                              \
  GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_##x

static int compare_symbol(const void *key, const void *elem) {
  return strcmp(key, ((const berth_reflect_symbol *)elem)->name);
}

const berth_reflect_symbol *berth_reflect_find_symbol(const char *name,
                                                      size_t len) {
  if (len > 0 && name[0] == '.') { /* ".pkg.Type", as descriptors write it */
    name++;
    len--;
  }
  char key[512];
  if (len == 0 || len >= sizeof key || memchr(name, '\0', len) != NULL)
    return NULL;
  memcpy(key, name, len);
  key[len] = '\0';
  return bsearch(key, berth_reflect_symbols, berth_reflect_n_symbols,
                 sizeof berth_reflect_symbols[0], compare_symbol);
}

static bool utf8_ok(const char *s) {
  size_t n = strlen(s);
  char *copy = malloc(n + 1);
  if (copy == NULL)
    return false;
  berth_grpc_utf8_clean(s, copy, n + 1);
  bool same = strcmp(copy, s) == 0;
  free(copy);
  return same;
}

/* The request's strings must be UTF-8 (proto3 strings). */
static const char *request_text(const request *rq) {
  switch (rq->message_request_case) {
  case CASE(FILE_BY_FILENAME):
    return rq->file_by_filename;
  case CASE(FILE_CONTAINING_SYMBOL):
    return rq->file_containing_symbol;
  case CASE(ALL_EXTENSION_NUMBERS_OF_TYPE):
    return rq->all_extension_numbers_of_type;
  case CASE(LIST_SERVICES):
    return rq->list_services;
  case CASE(FILE_CONTAINING_EXTENSION):
    return rq->file_containing_extension != NULL
               ? rq->file_containing_extension->containing_type
               : "";
  default:
    return "";
  }
}

/* An error_response: NOT_FOUND, saying text (kept until packed). */
static void not_found(response *r, Grpc__Reflection__V1__ErrorResponse *e,
                      char *text) {
  e->error_code = BERTH_GRPC_NOT_FOUND;
  e->error_message = text;
  r->message_response_case = ANSWER(ERROR_RESPONSE);
  r->error_response = e;
}

/* The file (index k) first, then the files it imports. */
static void files_answer(response *r,
                         Grpc__Reflection__V1__FileDescriptorResponse *fd,
                         ProtobufCBinaryData *bin, size_t k) {
  const berth_reflect_file *f = &berth_reflect_files[k];
  bin[0] = (ProtobufCBinaryData){f->len, (uint8_t *)(uintptr_t)f->data};
  for (size_t i = 0; i < f->n_deps; i++) {
    const berth_reflect_file *d = &berth_reflect_files[f->deps[i]];
    bin[i + 1] = (ProtobufCBinaryData){d->len, (uint8_t *)(uintptr_t)d->data};
  }
  fd->n_file_descriptor_proto = f->n_deps + 1;
  fd->file_descriptor_proto = bin;
  r->message_response_case = ANSWER(FILE_DESCRIPTOR_RESPONSE);
  r->file_descriptor_response = fd;
}

static int list_and_append(response *r, berth_buf *out, berth_errmsg *err) {
  Grpc__Reflection__V1__ListServiceResponse list =
      GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1__ServiceResponse svc[8], *ptr[8];
  size_t n = berth_reflect_n_services < 8 ? berth_reflect_n_services : 8;
  for (size_t i = 0; i < n; i++) {
    grpc__reflection__v1__service_response__init(&svc[i]);
    svc[i].name = (char *)(uintptr_t)berth_reflect_services[i];
    ptr[i] = &svc[i];
  }
  list.n_service = n;
  list.service = ptr;
  r->message_response_case = ANSWER(LIST_SERVICES_RESPONSE);
  r->list_services_response = &list;
  return berth_grpc_append_message(&r->base, out, err);
}

static int answer(const request *rq, response *r, berth_buf *out,
                  berth_errmsg *err) {
  Grpc__Reflection__V1__ErrorResponse e =
      GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
  Grpc__Reflection__V1__FileDescriptorResponse fd =
      GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1__ExtensionNumberResponse ext =
      GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
  ProtobufCBinaryData bin[BERTH_REFLECT_MAX_DEPS + 1];
  char text[400];
  const char *name = request_text(rq);
  const berth_reflect_symbol *sym = NULL;
  switch (rq->message_request_case) {
  case CASE(LIST_SERVICES):
    return list_and_append(r, out, err);
  case CASE(FILE_BY_FILENAME): {
    size_t k = 0;
    while (k < berth_reflect_n_files &&
           strcmp(berth_reflect_files[k].name, name) != 0)
      k++;
    if (k == berth_reflect_n_files)
      not_found(r, &e, FMT(text, "unknown file '%.200s'", name));
    else
      files_answer(r, &fd, bin, k);
    break;
  }
  case CASE(FILE_CONTAINING_SYMBOL):
    sym = berth_reflect_find_symbol(name, strlen(name));
    if (sym == NULL)
      not_found(r, &e, FMT(text, "unknown symbol '%.200s'", name));
    else
      files_answer(r, &fd, bin, sym->file);
    break;
  case CASE(FILE_CONTAINING_EXTENSION):
    not_found(r, &e,
              FMT(text,
                  "no extension of '%.200s': Berth's services declare "
                  "no extensions",
                  name));
    break;
  case CASE(ALL_EXTENSION_NUMBERS_OF_TYPE):
    sym = berth_reflect_find_symbol(name, strlen(name));
    if (sym == NULL || sym->kind != 'm') {
      not_found(r, &e, FMT(text, "unknown message type '%.200s'", name));
    } else { /* a known message: no extension numbers */
      ext.base_type_name = (char *)(uintptr_t)sym->name;
      r->message_response_case = ANSWER(ALL_EXTENSION_NUMBERS_RESPONSE);
      r->all_extension_numbers_response = &ext;
    }
    break;
  default:
    return berth_errf(err, BERTH_E_INVALID,
                      "the ServerReflectionRequest asks nothing: "
                      "set one of list_services, file_by_filename, "
                      "file_containing_symbol, file_containing_extension, "
                      "all_extension_numbers_of_type");
  }
  return berth_grpc_append_message(&r->base, out, err);
}

int berth_grpc_reflect_answer(const uint8_t *msg, size_t len, berth_buf *out,
                              berth_errmsg *err) {
  request *rq = (request *)berth_grpc_unpack(
      &grpc__reflection__v1__server_reflection_request__descriptor, msg, len);
  if (rq == NULL)
    return berth_errf(err, BERTH_E_PARSE,
                      "the message is not a valid "
                      "ServerReflectionRequest");
  int rc = BERTH_OK;
  if (!utf8_ok(rq->host) || !utf8_ok(request_text(rq)))
    rc = berth_errf(err, BERTH_E_INVALID,
                    "the ServerReflectionRequest's strings must "
                    "be UTF-8");
  if (rc == BERTH_OK) {
    /* The echo carries the request's known fields only: protobuf-c keeps
     * unknown ones (and fields of the wrong wire type) as they came, which
     * need not make a valid message again. */
    request echo = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    Grpc__Reflection__V1__ExtensionRequest ext =
        GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    echo.host = rq->host;
    echo.message_request_case = rq->message_request_case;
    echo.file_by_filename =
        (char *)(uintptr_t)request_text(rq); /* a string member */
    if (rq->message_request_case == CASE(FILE_CONTAINING_EXTENSION)) {
      ext.containing_type = (char *)(uintptr_t)request_text(rq);
      ext.extension_number =
          rq->file_containing_extension != NULL
              ? rq->file_containing_extension->extension_number
              : 0;
      echo.file_containing_extension = &ext;
    }
    response r = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    r.valid_host = rq->host;
    r.original_request = &echo;
    rc = answer(rq, &r, out, err);
  }
  protobuf_c_message_free_unpacked(&rq->base, NULL);
  return rc;
}

int berth_grpc_reflect_info(berth_engine *e, const uint8_t *msg, size_t len,
                            berth_buf *out, berth_errmsg *err) {
  (void)e;
  return berth_grpc_reflect_answer(msg, len, out, err);
}
