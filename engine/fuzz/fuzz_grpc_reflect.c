/* Fuzz target: gRPC server reflection's answers (grpc_reflect.c) to any
 * bytes as a ServerReflectionRequest.
 *
 * Either the bytes are refused with a message, or the answer is one framed
 * ServerReflectionResponse that unpacks, echoes the request, and carries
 * exactly one kind of answer; a file answer starts with a descriptor of the
 * table. Any broken promise traps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec_grpc.h"
#include "grpc_reflect.h"
#include "reflection_v1.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_files(const Grpc__Reflection__V1__FileDescriptorResponse *fd) {
  if (fd == NULL || fd->n_file_descriptor_proto == 0)
    __builtin_trap();
  const ProtobufCBinaryData *first = &fd->file_descriptor_proto[0];
  size_t k = 0;
  while (k < berth_reflect_n_files &&
         berth_reflect_files[k].data != first->data &&
         !(berth_reflect_files[k].len == first->len &&
           memcmp(berth_reflect_files[k].data, first->data, first->len) == 0))
    k++;
  if (k == berth_reflect_n_files ||
      fd->n_file_descriptor_proto != berth_reflect_files[k].n_deps + 1)
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  berth_buf out;
  berth_buf_init(&out, 1 << 20);
  berth_errmsg err;
  err.msg[0] = '\0';
  int rc = berth_grpc_reflect_answer(data, size, &out, &err);
  if (rc != BERTH_OK) {
    if (out.len != 0 || err.msg[0] == '\0')
      __builtin_trap();
    berth_buf_free(&out);
    return 0;
  }
  if (out.len < BERTH_GRPC_PREFIX)
    __builtin_trap();
  Grpc__Reflection__V1__ServerReflectionResponse *m =
      grpc__reflection__v1__server_reflection_response__unpack(
          NULL, out.len - BERTH_GRPC_PREFIX,
          (const uint8_t *)out.data + BERTH_GRPC_PREFIX);
  if (m == NULL || m->original_request == NULL)
    __builtin_trap();
  switch (m->message_response_case) {
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE:
    check_files(m->file_descriptor_response);
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE:
    if (m->error_response->error_code != 5)
      __builtin_trap();
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
    if (m->list_services_response->n_service != berth_reflect_n_services)
      __builtin_trap();
    break;
  case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE:
    if (m->all_extension_numbers_response->n_extension_number != 0)
      __builtin_trap();
    break;
  default:
    __builtin_trap();
  }
  grpc__reflection__v1__server_reflection_response__free_unpacked(m, NULL);
  berth_buf_free(&out);
  return 0;
}
