/* Berth engine: gRPC server reflection (grpc.reflection.v1 and v1alpha,
 * ServerReflectionInfo) and the descriptors it serves.
 *
 * The descriptors are those of the .proto files the gRPC port serves
 * (proto/grpc_service.proto, model_config.proto, health.proto,
 * reflection_v1.proto, reflection_v1alpha.proto): protoc-c writes them as a
 * FileDescriptorSet at build time and engine/reflect/embed.py turns the set
 * into the static tables below (engine/reflect/meson.build). Nothing is
 * parsed at run time.
 */
#ifndef BERTH_GRPC_REFLECT_H
#define BERTH_GRPC_REFLECT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "berth/error.h"

#define BERTH_REFLECT_MAX_DEPS 8

/* One .proto file: its serialized FileDescriptorProto. */
typedef struct berth_reflect_file {
  const char *name;    /* as imported, e.g. "health.proto" */
  const uint8_t *data; /* static */
  size_t len;
  size_t n_deps;                       /* files it imports, transitively */
  size_t deps[BERTH_REFLECT_MAX_DEPS]; /* indices into berth_reflect_files */
} berth_reflect_file;

/* A fully qualified name a file declares: package-qualified messages
 * (nested ones too), their fields, enums and their values, services and
 * their methods. kind: 'm' message, 'f' field, 'e' enum, 'v' enum value,
 * 's' service, 'r' method. */
typedef struct berth_reflect_symbol {
  const char *name;
  size_t file; /* index into berth_reflect_files */
  char kind;
} berth_reflect_symbol;

/* Generated (reflect_data.c). The symbols are sorted by name (strcmp). */
extern const berth_reflect_file berth_reflect_files[];
extern const size_t berth_reflect_n_files;
extern const berth_reflect_symbol berth_reflect_symbols[];
extern const size_t berth_reflect_n_symbols;
extern const char *const berth_reflect_services[]; /* every service served */
extern const size_t berth_reflect_n_services;

/* The symbol named name (len bytes), or NULL. */
const berth_reflect_symbol *berth_reflect_find_symbol(const char *name,
                                                      size_t len);

/* Answers one ServerReflectionRequest (msg, len bytes; the message of
 * either package: they are the same on the wire) by appending one framed
 * ServerReflectionResponse to out. A question Berth cannot answer (an
 * unknown file or symbol, an extension) is an answer carrying an
 * error_response (NOT_FOUND), not an error. Returns BERTH_E_PARSE when msg
 * is not a ServerReflectionRequest or asks nothing, BERTH_E_TOO_LARGE or
 * BERTH_E_NOMEM. */
int berth_grpc_reflect_answer(const uint8_t *msg, size_t len, berth_buf *out,
                              berth_errmsg *err);

#endif
