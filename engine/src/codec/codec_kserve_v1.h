/* Berth engine: KServe v1's answer encoding (codec_kserve_v1.c). */
#ifndef BERTH_CODEC_KSERVE_V1_H
#define BERTH_CODEC_KSERVE_V1_H

#include "berth/error.h"
#include "buf.h"
#include "infer.h"

/* Appends {"predictions": ...}: the first output (the requested one when
 * the request named one) as nested lists. */
int berth_kserve_v1_encode(const berth_infer_request *r,
                           const berth_infer_response *resp, berth_buf *out,
                           berth_errmsg *err);

#endif
