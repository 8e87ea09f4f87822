/* Fuzz target: what the dashboard reads from a request or copies from
 * request-driven error messages — the Authorization: Basic credentials and
 * the UTF-8 sanitizer behind the recent-errors ring. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ui.h"
#include "ui_stats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char pw[4097];
  size_t n = 0;
  if (berth_ui_basic_password((const char *)data, size, pw, sizeof pw, &n)) {
    if (n >= sizeof pw || pw[n] != '\0' || strlen(pw) != n)
      __builtin_trap();
  }
  char *text = malloc(size + 1);
  if (text == NULL)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  char out[BERTH_UI_ERROR_TEXT];
  size_t w = berth_ui_copy_text(out, sizeof out, text);
  if (w >= sizeof out || out[w] != '\0' || strlen(out) != w)
    __builtin_trap();
  for (size_t i = 0; i < w; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
      __builtin_trap();
  free(text);
  return 0;
}
