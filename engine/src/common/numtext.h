/* Berth engine: numbers as text (numtext.c). No allocation; callers give a
 * buffer of at least BERTH_NUM_MAX bytes and get the length written (no NUL). */
#ifndef BERTH_NUMTEXT_H
#define BERTH_NUMTEXT_H

#include <stddef.h>
#include <stdint.h>

/* Longest text of one number (sign, 21 digits, ".0", exponent) plus comma. */
#define BERTH_NUM_MAX 40

size_t berth_num_u64(char *dst, uint64_t v);
size_t berth_num_i64(char *dst, int64_t v);
/* A binary float given by its bits, ebits exponent bits and p significand
 * bits (FP16 5/11, BF16 8/8, FP32 8/24, FP64 11/53), as the shortest text
 * that reads back to it; NaN, Infinity, -Infinity for the specials. */
size_t berth_num_float_bits(char *dst, uint64_t bits, int ebits, int p);
/* Rounds d to nearest even in a format of ebits exponent bits and mbits
 * stored significand bits (FP16: 5/10, BF16: 8/7); too large a finite value
 * becomes infinity (callers report it as out of range). */
uint16_t berth_num_narrow(double d, int ebits, int mbits);

#endif
