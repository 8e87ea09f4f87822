#include "berth/error.h"

#include <stdarg.h>
#include <stdio.h>

const char *berth_status_name(int status) {
  switch (status) {
#define BERTH_STATUS_NAME_(name, value, msg)                                   \
  case value:                                                                  \
    return #name;
    BERTH_STATUS_MAP(BERTH_STATUS_NAME_)
#undef BERTH_STATUS_NAME_
  default:
    return "UNKNOWN";
  }
}

const char *berth_status_message(int status) {
  switch (status) {
#define BERTH_STATUS_MSG_(name, value, msg)                                    \
  case value:                                                                  \
    return msg;
    BERTH_STATUS_MAP(BERTH_STATUS_MSG_)
#undef BERTH_STATUS_MSG_
  default:
    return "unknown error";
  }
}

int berth_errf(berth_errmsg *err, int status, const char *fmt, ...) {
  if (err != NULL) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return status;
}
