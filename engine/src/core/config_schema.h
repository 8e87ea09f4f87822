/* Berth engine: the shape of the engine document's schema tables, shared by
 * the tables themselves (config_schema.c) and the walker that checks a
 * document against them (config.c). Internal to those two files.
 */
#ifndef BERTH_CONFIG_SCHEMA_H
#define BERTH_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define BERTH_CONFIG_NO_SLOT SIZE_MAX
/* The most strings a BERTH_CF_ARGV list holds when its imax is 0. */
#define BERTH_CONFIG_ARGV_MAX 256
/* The most entries of the models list. */
#define BERTH_CONFIG_MODELS_MAX 4096

typedef enum berth_config_kind {
  BERTH_CF_STRING,     /* non-empty string -> char * */
  BERTH_CF_OPT_STRING, /* non-empty string or null -> char * or NULL */
  BERTH_CF_NAME,       /* [A-Za-z0-9_.-]{1,128} -> char * */
  BERTH_CF_VERSION,    /* NAME, or an integer >= 0 made one -> char * */
  BERTH_CF_ENUM,       /* one of choices -> char * */
  BERTH_CF_UINT,       /* integer in imin..imax -> unsigned of `size` bytes */
  BERTH_CF_DOUBLE,     /* number in dmin..dmax -> double */
  BERTH_CF_BOOL,       /* -> bool */
  BERTH_CF_ARGV,       /* list of 1..256 strings (imin..imax when imax is
                          set) -> NULL-terminated char ** + count */
  BERTH_CF_OBJECT,     /* any mapping, kept only in the normalised tree */
  BERTH_CF_DTYPE,      /* datatype name -> berth_dtype */
  BERTH_CF_SHAPE,      /* list of dims (-1 or >= 0) -> ndim + shape */
  BERTH_CF_SIZES,      /* list of sizes in imin..imax -> uint32_t[] + count */
  BERTH_CF_TENSORS,    /* list of tensor specs -> array + count + flag */
  BERTH_CF_SECTION,    /* mapping checked against `sub` */
  BERTH_CF_MODELS,     /* the non-empty models list */
  BERTH_CF_LIST,       /* imin..imax mappings checked against `sub` ->
                          array of `size`-byte elements + count */
  BERTH_CF_PIPELINES,  /* the pipelines list (pipeline_config.c) */
  BERTH_CF_BYTES,      /* an integer, or a string with a unit ("2GiB",
                          "512MB"), in imin..imax bytes -> uint64_t */
} berth_config_kind;

typedef struct berth_config_table berth_config_table;

typedef struct berth_config_field {
  const char *key;
  berth_config_kind kind;
  bool required;
  const char *def;            /* default as JSON text; NULL: stays absent */
  size_t slot;                /* offset of the value, or BERTH_CONFIG_NO_SLOT */
  size_t size;                /* BERTH_CF_UINT: width of the slot; LIST: of an
                          element */
  size_t count_slot;          /* ARGV, TENSORS: element count; SHAPE: ndim */
  size_t flag_slot;           /* TENSORS: the "declared" flag */
  int64_t imin, imax;         /* BERTH_CF_UINT */
  double dmin, dmax;          /* BERTH_CF_DOUBLE */
  const char *const *choices; /* BERTH_CF_ENUM, NULL-terminated */
  const berth_config_table *sub; /* BERTH_CF_SECTION, BERTH_CF_LIST; a
                                     SECTION with a slot fills the struct
                                     there, else base itself */
} berth_config_field;

struct berth_config_table {
  const berth_config_field *fields;
  size_t n;
};

/* Protocol names by berth_dtype value; kept here so that the config does
 * not depend on tensor.c's table. */
extern const char *const berth_config_dtypes[BERTH_DT_COUNT];

/* The mappings the walker enters by name; the others hang off these. */
extern const berth_config_table berth_config_root;   /* the document */
extern const berth_config_table berth_config_model;  /* a models[] entry */
extern const berth_config_table berth_config_tensor; /* inputs/outputs[] */
extern const berth_config_table berth_config_route;  /* a routes[] entry */

#endif
