/* Unit tests for grpc_reflect.c: the generated descriptor tables (files,
 * imports, sorted symbols, services) and the answers to each kind of
 * ServerReflectionRequest, built and read with the same protoc-c code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec_grpc.h"
#include "grpc.h"
#include "grpc_reflect.h"
#include "reflection_v1.pb-c.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;

/* Answers r; the unpacked response (NULL when the answer is an error, rc
 * then in *rc). */
static Resp *ask(const Req *r, int *rc) {
  size_t len =
      grpc__reflection__v1__server_reflection_request__get_packed_size(r);
  uint8_t *b = malloc(len + 1);
  assert_non_null(b);
  grpc__reflection__v1__server_reflection_request__pack(r, b);
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_errmsg err;
  err.msg[0] = '\0';
  *rc = berth_grpc_reflect_answer(b, len, &out, &err);
  free(b);
  Resp *m = NULL;
  if (*rc == BERTH_OK) {
    assert_true(out.len > BERTH_GRPC_PREFIX);
    const uint8_t *p = (const uint8_t *)out.data;
    size_t n = ((size_t)p[1] << 24) | ((size_t)p[2] << 16) |
               ((size_t)p[3] << 8) | p[4];
    assert_int_equal(p[0], 0);
    assert_int_equal(n, out.len - BERTH_GRPC_PREFIX);
    m = grpc__reflection__v1__server_reflection_response__unpack(NULL, n,
                                                                 p + 5);
    assert_non_null(m);
  } else {
    assert_true(err.msg[0] != '\0');
  }
  berth_buf_free(&out);
  return m;
}

static void free_resp(Resp *m) {
  grpc__reflection__v1__server_reflection_response__free_unpacked(m, NULL);
}

static size_t file_index(const char *name) {
  for (size_t i = 0; i < berth_reflect_n_files; i++)
    if (strcmp(berth_reflect_files[i].name, name) == 0)
      return i;
  fail_msg("no file %s", name);
  return 0;
}

static void test_tables(void **state) {
  (void)state;
  assert_int_equal(berth_reflect_n_files, 5);
  const berth_reflect_file *g =
      &berth_reflect_files[file_index("grpc_service.proto")];
  assert_int_equal(g->n_deps, 1);
  assert_string_equal(berth_reflect_files[g->deps[0]].name,
                      "model_config.proto");
  for (size_t i = 1; i < berth_reflect_n_symbols; i++)
    assert_true(strcmp(berth_reflect_symbols[i - 1].name,
                       berth_reflect_symbols[i].name) < 0);
  assert_int_equal(berth_reflect_n_services, 4);
  const char *want[] = {"grpc.health.v1.Health",
                        "grpc.reflection.v1.ServerReflection",
                        "grpc.reflection.v1alpha.ServerReflection",
                        "inference.GRPCInferenceService"};
  for (size_t i = 0; i < 4; i++)
    assert_string_equal(berth_reflect_services[i], want[i]);
  struct {
    const char *name, *file;
    char kind;
  } syms[] = {
      {"inference.GRPCInferenceService", "grpc_service.proto", 's'},
      {"inference.GRPCInferenceService.ModelInfer", "grpc_service.proto", 'r'},
      {".inference.ModelInferRequest", "grpc_service.proto", 'm'},
      {"inference.ModelInferRequest.InferInputTensor", "grpc_service.proto",
       'm'},
      {"inference.ModelInferRequest.raw_input_contents", "grpc_service.proto",
       'f'},
      {"inference.ModelConfig", "model_config.proto", 'm'},
      {"grpc.health.v1.HealthCheckResponse.ServingStatus", "health.proto", 'e'},
      {"grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN", "health.proto",
       'v'},
      {"grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
       "reflection_v1alpha.proto", 'r'},
  };
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    const berth_reflect_symbol *s =
        berth_reflect_find_symbol(syms[i].name, strlen(syms[i].name));
    assert_non_null(s);
    assert_string_equal(berth_reflect_files[s->file].name, syms[i].file);
    assert_int_equal(s->kind, syms[i].kind);
  }
  assert_null(berth_reflect_find_symbol("inference", 9));
  assert_null(berth_reflect_find_symbol("inference.Nope", 14));
  assert_null(berth_reflect_find_symbol("", 0));
  assert_null(berth_reflect_find_symbol("inference.ModelInferRequest\0x", 29));
}

static void test_list_services(void **state) {
  (void)state;
  Req r = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  r.host = "localhost:8081";
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
  r.list_services = "*";
  int rc;
  Resp *m = ask(&r, &rc);
  assert_int_equal(rc, BERTH_OK);
  assert_string_equal(m->valid_host, "localhost:8081");
  assert_non_null(m->original_request);
  assert_string_equal(m->original_request->list_services, "*");
  assert_int_equal(
      m->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE);
  assert_int_equal(m->list_services_response->n_service, 4);
  assert_string_equal(m->list_services_response->service[3]->name,
                      "inference.GRPCInferenceService");
  free_resp(m);
}

/* The file's descriptor first, then its imports'. */
static void check_files(Resp *m, const char *first, size_t n) {
  assert_int_equal(
      m->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE);
  Grpc__Reflection__V1__FileDescriptorResponse *fd =
      m->file_descriptor_response;
  assert_int_equal(fd->n_file_descriptor_proto, n);
  const berth_reflect_file *f = &berth_reflect_files[file_index(first)];
  assert_int_equal(fd->file_descriptor_proto[0].len, f->len);
  assert_memory_equal(fd->file_descriptor_proto[0].data, f->data, f->len);
}

static void test_files(void **state) {
  (void)state;
  Req r = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  int rc;
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  r.file_by_filename = "grpc_service.proto";
  Resp *m = ask(&r, &rc);
  check_files(m, "grpc_service.proto", 2);
  free_resp(m);
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  r.file_containing_symbol = "grpc.health.v1.Health.Watch";
  m = ask(&r, &rc);
  check_files(m, "health.proto", 1);
  free_resp(m);
  r.file_containing_symbol = "inference.ModelConfig";
  m = ask(&r, &rc);
  check_files(m, "model_config.proto", 1);
  free_resp(m);
}

static void check_not_found(Req *r, const char *words) {
  int rc;
  Resp *m = ask(r, &rc);
  assert_int_equal(rc, BERTH_OK);
  assert_int_equal(
      m->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE);
  assert_int_equal(m->error_response->error_code, BERTH_GRPC_NOT_FOUND);
  assert_non_null(strstr(m->error_response->error_message, words));
  free_resp(m);
}

static void test_not_found(void **state) {
  (void)state;
  Req r = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
  r.file_by_filename = "../../etc/passwd";
  check_not_found(&r, "unknown file '../../etc/passwd'");
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  r.file_containing_symbol = "inference.Nope";
  check_not_found(&r, "unknown symbol");
  Grpc__Reflection__V1__ExtensionRequest x =
      GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
  x.containing_type = "inference.ModelInferRequest";
  x.extension_number = 100;
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
  r.file_containing_extension = &x;
  check_not_found(&r, "no extensions");
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
  r.all_extension_numbers_of_type =
      "inference.GRPCInferenceService"; /* a service */
  check_not_found(&r, "unknown message type");
  r.all_extension_numbers_of_type = "inference.ModelInferRequest";
  int rc;
  Resp *m = ask(&r, &rc);
  assert_int_equal(
      m->message_response_case,
      GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE);
  assert_string_equal(m->all_extension_numbers_response->base_type_name,
                      "inference.ModelInferRequest");
  assert_int_equal(m->all_extension_numbers_response->n_extension_number, 0);
  free_resp(m);
}

static void test_bad_requests(void **state) {
  (void)state;
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_errmsg err;
  const uint8_t junk[] = {0xff, 0xff, 0xff, 0x07, 0x01};
  assert_int_equal(berth_grpc_reflect_answer(junk, sizeof junk, &out, &err),
                   BERTH_E_PARSE);
  assert_int_equal(out.len, 0);
  Req r = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
  int rc;
  assert_null(ask(&r, &rc)); /* asks nothing */
  assert_int_equal(rc, BERTH_E_INVALID);
  r.message_request_case =
      GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
  r.file_containing_symbol = "inference.\xff\xfe";
  assert_null(ask(&r, &rc));
  assert_int_equal(rc, BERTH_E_INVALID);
  r.file_containing_symbol = "inference.ModelInferRequest";
  r.host = "\xc3";
  assert_null(ask(&r, &rc));
  assert_int_equal(rc, BERTH_E_INVALID);
  berth_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tables),       cmocka_unit_test(test_list_services),
      cmocka_unit_test(test_files),        cmocka_unit_test(test_not_found),
      cmocka_unit_test(test_bad_requests),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
