/* Tests for codec_openai.c: the OpenAI request bodies decoded and checked
 * (docs/openai.md): what each route keeps, the bounds, the refusals with
 * the field at fault, and nothing owned after a refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "codec_openai.h"

static int decode(const char *body, berth_oai_kind kind, berth_oai_request *r,
                  berth_errmsg *err) {
  return berth_oai_decode(body, strlen(body), kind, r, err);
}

static void chat_is_normalised(void **state) {
  (void)state;
  berth_oai_request r;
  berth_errmsg err;
  assert_int_equal(
      decode("{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":"
             "\"be brief\",\"extra\":1},{\"role\":\"user\",\"name\":\"a\","
             "\"content\":[{\"type\":\"text\",\"text\":\"one\"},{\"type\":"
             "\"text\",\"text\":\"two\"}]}],\"n\":2,\"seed\":-5,"
             "\"max_completion_tokens\":7,\"stop\":\"end\",\"user\":\"u\"}",
             BERTH_OAI_CHAT, &r, &err),
      BERTH_OK);
  assert_string_equal(r.model, "m");
  assert_string_equal(r.messages,
                      "[{\"role\":\"system\",\"content\":\"be brief\"},"
                      "{\"role\":\"user\",\"content\":\"one\\ntwo\","
                      "\"name\":\"a\"}]");
  assert_true(r.has_n && r.n == 2);
  assert_true(r.has_seed && r.seed == -5);
  assert_true(r.has_max_tokens && r.max_tokens == 7);
  assert_int_equal(r.n_stop, 1);
  assert_string_equal(r.stop[0], "end");
  assert_false(r.stream);
  assert_null(r.prompt);
  berth_oai_request_clear(&r);
}

static void completion_and_stream(void **state) {
  (void)state;
  berth_oai_request r;
  berth_errmsg err;
  assert_int_equal(
      decode("{\"model\":\"m\",\"prompt\":[\"hi\"],\"temperature\":0,"
             "\"top_p\":1,\"stream\":true,\"stream_options\":{"
             "\"include_usage\":true},\"logprobs\":null,\"echo\":false,"
             "\"presence_penalty\":0}",
             BERTH_OAI_COMPLETION, &r, &err),
      BERTH_OK);
  assert_string_equal(r.prompt, "hi");
  assert_true(r.has_temperature && r.temperature == 0.0f);
  assert_true(r.has_top_p && r.top_p == 1.0f);
  assert_true(r.stream && r.include_usage);
  assert_int_equal(r.n, 1);
  assert_false(r.has_n);
  berth_oai_request_clear(&r);
}

static void embeddings(void **state) {
  (void)state;
  berth_oai_request r;
  berth_errmsg err;
  assert_int_equal(decode("{\"model\":\"e\",\"input\":[\"a\",\"b\"],"
                          "\"encoding_format\":\"base64\",\"dimensions\":3}",
                          BERTH_OAI_EMBEDDING, &r, &err),
                   BERTH_OK);
  assert_int_equal(r.n_input, 2);
  assert_string_equal(r.input[1], "b");
  assert_true(r.base64 && r.has_dimensions && r.dimensions == 3);
  berth_oai_request_clear(&r);
  assert_int_equal(decode("{\"model\":\"e\",\"input\":\"x\"}",
                          BERTH_OAI_EMBEDDING, &r, &err),
                   BERTH_OK);
  assert_int_equal(r.n_input, 1);
  assert_false(r.base64);
  berth_oai_request_clear(&r);
}

/* Each body is refused with param naming the field; nothing stays owned. */
static void refusals(void **state) {
  (void)state;
  static const struct {
    berth_oai_kind kind;
    const char *body, *param;
  } cases[] = {
      {BERTH_OAI_COMPLETION, "{\"prompt\":\"a\"}", "model"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"\",\"prompt\":\"a\"}", "model"},
      {BERTH_OAI_COMPLETION, "[1]", ""},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,2]}", "prompt"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}",
       "prompt"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"n\":0}", "n"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"n\":17}",
       "n"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":2.5}", "max_tokens"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":2.01}",
       "temperature"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"top_p\":-1}",
       "top_p"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\","
       "\"e\"]}",
       "stop"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[\"\"]}", "stop"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"seed\":1.5}",
       "seed"},
      {BERTH_OAI_COMPLETION,
       "{\"model\":\"m\",\"prompt\":\"a\",\"stream_options\":{}}",
       "stream_options"},
      {BERTH_OAI_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"echo\":true}",
       "echo"},
      {BERTH_OAI_CHAT, "{\"model\":\"m\",\"messages\":[],\"tools\":[]}",
       "messages"},
      {BERTH_OAI_CHAT,
       "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
       "\"tools\":[]}",
       "tools"},
      {BERTH_OAI_CHAT,
       "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],"
       "\"response_format\":{\"type\":\"json_object\"}}",
       "response_format"},
      {BERTH_OAI_CHAT,
       "{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"a\"}]}",
       "messages"},
      {BERTH_OAI_CHAT,
       "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{"
       "\"type\":\"image_url\"}]}]}",
       "messages"},
      {BERTH_OAI_EMBEDDING, "{\"model\":\"e\",\"input\":[[1,2]]}", "input"},
      {BERTH_OAI_EMBEDDING, "{\"model\":\"e\",\"input\":[]}", "input"},
      {BERTH_OAI_EMBEDDING, "{\"model\":\"e\",\"input\":[\"a\",\"\"]}",
       "input"},
      {BERTH_OAI_EMBEDDING,
       "{\"model\":\"e\",\"input\":\"a\",\"encoding_format\":\"hex\"}",
       "encoding_format"},
      {BERTH_OAI_EMBEDDING,
       "{\"model\":\"e\",\"input\":\"a\",\"dimensions\":0}", "dimensions"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    berth_oai_request r;
    berth_errmsg err;
    int rc = decode(cases[i].body, cases[i].kind, &r, &err);
    if (rc != BERTH_E_INVALID || strcmp(r.err_param, cases[i].param) != 0)
      fail_msg("case %zu (%s): rc %d, param '%s'", i, cases[i].body, rc,
               r.err_param);
    assert_null(r.model);
    assert_null(r.messages);
    assert_null(r.input);
    assert_int_equal(r.n_stop, 0);
  }
}

static void bad_json(void **state) {
  (void)state;
  berth_oai_request r;
  berth_errmsg err;
  assert_int_equal(decode("{\"model\":", BERTH_OAI_CHAT, &r, &err),
                   BERTH_E_PARSE);
  assert_non_null(strstr(err.msg, "not valid JSON"));
  assert_int_equal(decode("{\"model\":\"a\",\"model\":\"b\",\"prompt\":\"x\"}",
                          BERTH_OAI_COMPLETION, &r, &err),
                   BERTH_E_PARSE); /* duplicate keys */
  assert_int_equal(berth_oai_decode(NULL, 0, BERTH_OAI_CHAT, &r, &err),
                   BERTH_E_PARSE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(chat_is_normalised),
      cmocka_unit_test(completion_and_stream),
      cmocka_unit_test(embeddings),
      cmocka_unit_test(refusals),
      cmocka_unit_test(bad_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
