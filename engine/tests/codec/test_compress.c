/* Tests for gzip/deflate bodies (compress.c): round trips, the output
 * limit (a zip bomb stops at it), corrupt and truncated streams, raw
 * deflate, and the header parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "compress.h"

static const char DOC[] = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                          "\"shape\":[2],\"data\":[1,2]}]}";

static void test_round_trips(void **state) {
  (void)state;
  berth_encoding encs[] = {BERTH_ENC_GZIP, BERTH_ENC_DEFLATE};
  for (size_t i = 0; i < 2; i++) {
    char *z, *back;
    size_t zn, bn;
    berth_errmsg err;
    assert_int_equal(berth_deflate(encs[i], (const uint8_t *)DOC, strlen(DOC),
                                   &z, &zn, &err),
                     BERTH_OK);
    assert_int_equal(berth_inflate(encs[i], (const uint8_t *)z, zn, 1 << 20,
                                   &back, &bn, &err),
                     BERTH_OK);
    assert_int_equal(bn, strlen(DOC));
    assert_memory_equal(back, DOC, bn);
    /* the limit is inclusive: exactly the size inflates */
    free(back);
    assert_int_equal(
        berth_inflate(encs[i], (const uint8_t *)z, zn, bn, &back, &bn, &err),
        BERTH_OK);
    free(back);
    assert_int_equal(berth_inflate(encs[i], (const uint8_t *)z, zn, bn - 1,
                                   &back, &bn, &err),
                     BERTH_E_TOO_LARGE);
    assert_null(back);
    /* truncated, and bytes after the stream */
    assert_int_equal(berth_inflate(encs[i], (const uint8_t *)z, zn - 3, 1 << 20,
                                   &back, &bn, &err),
                     BERTH_E_PARSE);
    char *more = malloc(zn + 2);
    memcpy(more, z, zn);
    memcpy(more + zn, "xx", 2);
    assert_int_equal(berth_inflate(encs[i], (const uint8_t *)more, zn + 2,
                                   1 << 20, &back, &bn, &err),
                     BERTH_E_PARSE);
    free(more);
    free(z);
  }
}

static void test_zip_bomb_stops_at_the_limit(void **state) {
  (void)state;
  size_t big = 64u << 20; /* 64 MiB of zeros: about 64 KB compressed */
  char *zeros = calloc(1, big);
  assert_non_null(zeros);
  char *z, *out;
  size_t zn, on;
  berth_errmsg err;
  assert_int_equal(
      berth_deflate(BERTH_ENC_GZIP, (const uint8_t *)zeros, big, &z, &zn, &err),
      BERTH_OK);
  free(zeros);
  assert_true(zn < 200000);
  assert_int_equal(berth_inflate(BERTH_ENC_GZIP, (const uint8_t *)z, zn,
                                 1 << 20, &out, &on, &err),
                   BERTH_E_TOO_LARGE);
  assert_null(out);
  assert_non_null(strstr(err.msg, "max_body_bytes"));
  free(z);
}

static void test_garbage_is_a_parse_error(void **state) {
  (void)state;
  char *out;
  size_t on;
  berth_errmsg err;
  const char junk[] = "this is not compressed";
  assert_int_equal(berth_inflate(BERTH_ENC_GZIP, (const uint8_t *)junk,
                                 sizeof junk, 1024, &out, &on, &err),
                   BERTH_E_PARSE);
  assert_int_equal(berth_inflate(BERTH_ENC_DEFLATE, (const uint8_t *)junk,
                                 sizeof junk, 1024, &out, &on, &err),
                   BERTH_E_PARSE);
  assert_int_equal(
      berth_inflate(BERTH_ENC_GZIP, NULL, 0, 1024, &out, &on, &err),
      BERTH_E_PARSE);
}

static void test_headers(void **state) {
  (void)state;
  berth_encoding e;
  berth_errmsg err;
  assert_int_equal(berth_encoding_parse(" GZip ", 6, &e, &err), BERTH_OK);
  assert_int_equal(e, BERTH_ENC_GZIP);
  assert_int_equal(berth_encoding_parse("deflate", 7, &e, &err), BERTH_OK);
  assert_int_equal(e, BERTH_ENC_DEFLATE);
  assert_int_equal(berth_encoding_parse("identity", 8, &e, &err), BERTH_OK);
  assert_int_equal(e, BERTH_ENC_IDENTITY);
  assert_int_equal(berth_encoding_parse("br", 2, &e, &err), BERTH_E_MEDIA_TYPE);
  assert_non_null(strstr(err.msg, "'br'"));
  assert_int_equal(berth_encoding_parse("gzip, gzip", 10, &e, &err),
                   BERTH_E_MEDIA_TYPE);
  const char *a = "deflate, gzip;q=0.8";
  assert_int_equal(berth_encoding_accept(a, strlen(a)), BERTH_ENC_GZIP);
  a = "gzip;q=0, deflate";
  assert_int_equal(berth_encoding_accept(a, strlen(a)), BERTH_ENC_DEFLATE);
  a = "br, identity";
  assert_int_equal(berth_encoding_accept(a, strlen(a)), BERTH_ENC_IDENTITY);
  assert_int_equal(berth_encoding_accept(NULL, 0), BERTH_ENC_IDENTITY);
  a = "gzip;q=0.0";
  assert_int_equal(berth_encoding_accept(a, strlen(a)), BERTH_ENC_IDENTITY);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_zip_bomb_stops_at_the_limit),
      cmocka_unit_test(test_garbage_is_a_parse_error),
      cmocka_unit_test(test_headers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
