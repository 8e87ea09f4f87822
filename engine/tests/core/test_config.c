/* Tests for the engine document: berth_yaml_load (YAML/JSON to jansson,
 * core-schema typing, refusals) and berth_config_parse (defaults, the full
 * schema, and one case per error class with its exact message). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static int parse(const char *text, berth_config *c, berth_errmsg *err) {
  return berth_config_parse(text, strlen(text), c, err);
}

static json_t *load(const char *text, berth_errmsg *err) {
  return berth_yaml_load(text, strlen(text), err);
}

static bool all_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0)
      return false;
  return true;
}

/* ---- berth_config_parse ---------------------------------------------- */

static void test_minimal_defaults(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse("models:\n  - name: iris\n    runtime: sklearn\n"
                 "    path: /models/iris.joblib\n",
                 &c, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_string_equal(c.host, "127.0.0.1");
  assert_int_equal(c.http_port, 8080);
  assert_int_equal(c.max_body_bytes, 67108864);
  assert_int_equal(c.max_head_bytes, 16384);
  assert_true(c.drain_timeout_s == 30.0);
  assert_string_equal(c.log_level, "info");
  assert_string_equal(c.log_format, "json");
  assert_false(c.access_log);
  assert_null(c.payload_log_path);
  assert_int_equal(c.payload_log_max_bytes, 104857600);
  assert_int_equal(c.payload_log_backups, 5);
  assert_int_equal(c.payload_log_queue_bytes, 16777216);
  assert_int_equal(c.worker_argc, 3);
  assert_string_equal(c.worker_command[0], "python3");
  assert_string_equal(c.worker_command[1], "-m");
  assert_string_equal(c.worker_command[2], "berth.worker");
  assert_null(c.worker_command[3]);
  assert_int_equal(c.n_allowed_hosts, 0); /* IP addresses and localhost */
  assert_null(c.allowed_hosts[0]);
  assert_int_equal(c.n_cors_origins, 0); /* no cross-site origin */
  assert_null(c.cors_origins[0]);
  assert_true(c.worker_load_timeout_s == 300.0);
  assert_true(c.restart_backoff_s == 0.1);
  assert_true(c.restart_backoff_max_s == 10.0);
  assert_int_equal(c.n_models, 1);
  berth_model_config *m = &c.models[0];
  assert_string_equal(m->name, "iris");
  assert_string_equal(m->version, "1");
  assert_string_equal(m->runtime, "sklearn");
  assert_null(m->platform);
  assert_int_equal(m->instances, 0);      /* absent: the engine picks */
  assert_int_equal(m->max_batch_size, 0); /* absent: the worker suggests */
  assert_int_equal(m->max_queue_delay_us, 1000);
  assert_int_equal(m->max_queue_size, 1024);
  assert_true(m->payload_log_rate == 0.0);
  assert_false(m->inputs_declared);
  assert_false(m->outputs_declared);
  assert_false(m->decoupled);
  assert_null(m->inputs);
  assert_int_equal(m->n_inputs, 0);

  char *entry = json_dumps(m->entry, JSON_COMPACT);
  assert_non_null(entry);
  assert_string_equal(
      entry, "{\"name\":\"iris\",\"version\":\"1\",\"runtime\":\"sklearn\","
             "\"platform\":null,\"path\":\"/models/iris.joblib\","
             "\"class\":null,\"max_queue_delay_us\":1000,"
             "\"preferred_batch_sizes\":[],\"timeout_us\":0,"
             "\"max_queue_size\":1024,\"parameters\":{},"
             "\"decoupled\":false,\"payload_log\":{\"rate\":0}}");
  free(entry);
  berth_config_clear(&c);
  assert_true(all_zero(&c, sizeof c));
  berth_config_clear(&c); /* twice is harmless */
}

static const char full_yaml[] =
    "# every key\n"
    "server:\n"
    "  host: 0.0.0.0\n"
    "  http_port: 0\n"
    "  max_body_bytes: 1048576\n"
    "  max_head_bytes: 8192\n"
    "  drain_timeout_s: 2.5\n"
    "log:\n"
    "  level: debug\n"
    "  format: text\n"
    "  access_log: true\n"
    "workers:\n"
    "  command: [/usr/bin/python3, -u, -m, berth.worker]\n"
    "  load_timeout_s: 60\n"
    "  restart_backoff_s: 0.5\n"
    "  restart_backoff_max_s: 5\n"
    "models:\n"
    "  - name: iris\n"
    "    version: 2\n"
    "    runtime: sklearn\n"
    "    platform: sklearn_joblib\n"
    "    path: /models/iris/2/model.joblib\n"
    "    class: null\n"
    "    instances: 4\n"
    "    max_batch_size: 32\n"
    "    max_queue_delay_us: 1e3\n"
    "    max_queue_size: 100\n"
    "    inputs:\n"
    "      - {name: input, datatype: FP64, shape: [-1, 4]}\n"
    "      - name: mask\n"
    "        datatype: BOOL\n"
    "        shape: []\n"
    "    outputs: []\n"
    "    parameters: {threads: 2, opts: [a, b]}\n"
    "  - name: my-model_v.2\n"
    "    version: \"2\"\n"
    "    runtime: python\n"
    "    path: ./m.py\n"
    "    class: MyModel\n";

static const char full_json[] =
    "{\"server\": {\"host\": \"0.0.0.0\", \"http_port\": 0,"
    " \"max_body_bytes\": 1048576, \"max_head_bytes\": 8192,"
    " \"drain_timeout_s\": 2.5},"
    " \"log\": {\"level\": \"debug\", \"format\": \"text\","
    " \"access_log\": true},"
    " \"workers\": {\"command\": [\"/usr/bin/python3\", \"-u\", \"-m\","
    " \"berth.worker\"], \"load_timeout_s\": 60, \"restart_backoff_s\": 0.5,"
    " \"restart_backoff_max_s\": 5},"
    " \"models\": [{\"name\": \"iris\", \"version\": 2, \"runtime\": \"sklearn\","
    " \"platform\": \"sklearn_joblib\","
    " \"path\": \"/models/iris/2/model.joblib\", \"class\": null,"
    " \"instances\": 4, \"max_batch_size\": 32, \"max_queue_delay_us\": 1000,"
    " \"max_queue_size\": 100,"
    " \"inputs\": [{\"name\": \"input\", \"datatype\": \"FP64\","
    " \"shape\": [-1, 4]}, {\"name\": \"mask\", \"datatype\": \"BOOL\","
    " \"shape\": []}],"
    " \"outputs\": [], \"parameters\": {\"threads\": 2, \"opts\": [\"a\","
    " \"b\"]}},"
    " {\"name\":\"my-model_v.2\",\"version\":\"2\",\"runtime\":\"python\","
    "\"path\":\"./m.py\",\"class\":\"MyModel\"}]}";

static void check_full(const char *text) {
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse(text, &c, &err);
  if (rc != BERTH_OK)
    fail_msg("%s", err.msg);
  assert_string_equal(c.host, "0.0.0.0");
  assert_int_equal(c.http_port, 0);
  assert_int_equal(c.max_body_bytes, 1048576);
  assert_int_equal(c.max_head_bytes, 8192);
  assert_true(c.drain_timeout_s == 2.5);
  assert_string_equal(c.log_level, "debug");
  assert_string_equal(c.log_format, "text");
  assert_true(c.access_log);
  assert_int_equal(c.worker_argc, 4);
  assert_string_equal(c.worker_command[0], "/usr/bin/python3");
  assert_string_equal(c.worker_command[3], "berth.worker");
  assert_null(c.worker_command[4]);
  assert_true(c.worker_load_timeout_s == 60.0);
  assert_true(c.restart_backoff_s == 0.5);
  assert_true(c.restart_backoff_max_s == 5.0);
  assert_int_equal(c.n_models, 2);

  berth_model_config *m = &c.models[0];
  assert_string_equal(m->name, "iris");
  assert_string_equal(m->version, "2");
  assert_string_equal(m->platform, "sklearn_joblib");
  assert_int_equal(m->instances, 4);
  assert_int_equal(m->max_batch_size, 32);
  assert_int_equal(m->max_queue_delay_us, 1000);
  assert_int_equal(m->max_queue_size, 100);
  assert_true(m->inputs_declared);
  assert_int_equal(m->n_inputs, 2);
  assert_string_equal(m->inputs[0].name, "input");
  assert_int_equal(m->inputs[0].dtype, BERTH_DT_FP64);
  assert_int_equal(m->inputs[0].ndim, 2);
  assert_int_equal(m->inputs[0].shape[0], -1);
  assert_int_equal(m->inputs[0].shape[1], 4);
  assert_string_equal(m->inputs[1].name, "mask");
  assert_int_equal(m->inputs[1].dtype, BERTH_DT_BOOL);
  assert_int_equal(m->inputs[1].ndim, 0);
  assert_true(m->outputs_declared);
  assert_int_equal(m->n_outputs, 0);
  assert_string_equal(json_string_value(json_object_get(m->entry, "version")),
                      "2");
  assert_int_equal(
      json_integer_value(json_object_get(m->entry, "max_queue_delay_us")),
      1000);
  json_t *params = json_object_get(m->entry, "parameters");
  assert_int_equal(json_integer_value(json_object_get(params, "threads")), 2);
  assert_int_equal(json_array_size(json_object_get(params, "opts")), 2);
  json_t *in0 = json_array_get(json_object_get(m->entry, "inputs"), 0);
  char *s = json_dumps(in0, JSON_COMPACT);
  assert_string_equal(s, "{\"name\":\"input\",\"datatype\":\"FP64\","
                         "\"shape\":[-1,4]}");
  free(s);
  assert_true(json_is_array(json_object_get(m->entry, "outputs")));

  m = &c.models[1];
  assert_string_equal(m->name, "my-model_v.2");
  assert_string_equal(m->version, "2");
  assert_string_equal(json_string_value(json_object_get(m->entry, "class")),
                      "MyModel");
  berth_config_clear(&c);
}

static void test_full_yaml(void **state) {
  (void)state;
  check_full(full_yaml);
}

static void test_full_json(void **state) {
  (void)state;
  check_full(full_json);
}

/* Wraps one model entry's extra keys into a valid document. */
#define MODEL(extra) "models:\n  - {name: m, runtime: r, path: p" extra "}\n"

typedef struct error_case {
  const char *text;
  const char *msg;
} error_case;

static const error_case error_cases[] = {
    /* structure */
    {"[1, 2]", "(top level): expected a mapping, got a list"},
    {"hello", "(top level): expected a mapping, got \"hello\""},
    {"server: {}\n", "models: required"},
    {"models: []\n", "models: must list at least one model"},
    /* gateway: (docs/gateway.md) */
    {"gateway: {retries: 9}\nmodels: []\n",
     "gateway.retries: expected an integer in 0..8, got 9"},
    {"gateway: {replicas: [{name: a}]}\nmodels: []\n",
     "gateway.replicas[0].url: required"},
    {"gateway: {foo: 1}\nmodels: []\n", "gateway.foo: unknown key"},
    {"gateway: {health_interval_ms: 0}\nmodels: []\n",
     "gateway.health_interval_ms: expected an integer in 1..3600000, got 0"},
    {"models: {}\n", "models: expected a list of models, got a mapping"},
    {"models: [3]\n", "models[0]: expected a mapping, got 3"},
    {"servers: {}\nmodels: []\n", "servers: unknown key"},
    {MODEL(", max_batch_sise: 4"), "models[0].max_batch_sise: unknown key"},
    {"server: {port: 1}\n" MODEL(""), "server.port: unknown key"},
    {"server: 8080\n" MODEL(""), "server: expected a mapping, got 8080"},
    /* required model keys */
    {"models: [{runtime: r, path: p}]\n", "models[0].name: required"},
    {"models: [{name: m, path: p}]\n", "models[0].runtime: required"},
    {"models: [{name: m, runtime: r}]\n", "models[0].path: required"},
    /* strings and names */
    {"models: [{name: 'a b', runtime: r, path: p}]\n",
     "models[0].name: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got \"a b\""},
    {"models: [{name: '', runtime: r, path: p}]\n",
     "models[0].name: expected 1..128 characters of [A-Za-z0-9_.-], got \"\""},
    {MODEL(", version: 1.5"),
     "models[0].version: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got 1.5"},
    {"models: [{name: '..', runtime: r, path: p}]\n",
     "models[0].name: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got \"..\""},
    {MODEL(", version: -3"),
     "models[0].version: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got -3"},
    {MODEL(", version: 'v/1'"),
     "models[0].version: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got \"v/1\""},
    {"models: [{name: m, runtime: 3, path: p}]\n",
     "models[0].runtime: expected a string, got 3"},
    {"models: [{name: m, runtime: r, path: ''}]\n",
     "models[0].path: may not be empty"},
    {"models: [{name: m, runtime: r, path: \"a\\0b\"}]\n",
     "models[0].path: may not contain NUL"},
    {MODEL(", platform: [x]"),
     "models[0].platform: expected a string, got a list"},
    {MODEL(", class: true"), "models[0].class: expected a string, got true"},
    /* integers */
    {"server: {http_port: 70000}\n" MODEL(""),
     "server.http_port: expected an integer in 0..65535, got 70000"},
    {"server: {http_port: '80'}\n" MODEL(""),
     "server.http_port: expected an integer in 0..65535, got \"80\""},
    {"server: {http_port: 80.5}\n" MODEL(""),
     "server.http_port: expected an integer in 0..65535, got 80.5"},
    {"server: {metrics_port: 8081}\n" MODEL(""),
     "server.metrics_port: must differ from server.http_port (8080) and "
     "server.grpc_port (8081); 0 turns it off"},
    {"server: {metrics_port: 65536}\n" MODEL(""),
     "server.metrics_port: expected an integer in 0..65535, got 65536"},
    {"server: {max_head_bytes: 10}\n" MODEL(""),
     "server.max_head_bytes: expected an integer in 1024..1048576, got 10"},
    {MODEL(", instances: 0"),
     "models[0].instances: expected an integer in 1..256, got 0"},
    {MODEL(", max_batch_size: ten"),
     "models[0].max_batch_size: expected an integer in 0..1048576, "
     "got \"ten\""},
    {MODEL(", max_queue_delay_us: 60000001"),
     "models[0].max_queue_delay_us: expected an integer in 0..60000000, "
     "got 60000001"},
    {MODEL(", max_queue_size: 0"),
     "models[0].max_queue_size: expected an integer in 1..1000000, got 0"},
    /* numbers, enums, bools */
    {"server: {drain_timeout_s: -1}\n" MODEL(""),
     "server.drain_timeout_s: expected a number in 0..3600, got -1"},
    {"workers: {load_timeout_s: null}\n" MODEL(""),
     "workers.load_timeout_s: expected a number in 0.001..86400, got null"},
    {"workers: {restart_backoff_s: 2, restart_backoff_max_s: 1}\n" MODEL(""),
     "workers.restart_backoff_max_s: must be >= workers.restart_backoff_s "
     "(2)"},
    {"log: {level: verbose}\n" MODEL(""),
     "log.level: expected one of debug, info, warning, error, "
     "got \"verbose\""},
    {"log: {format: xml}\n" MODEL(""),
     "log.format: expected one of json, text, auto, got \"xml\""},
    {"log: {payload_log_max_bytes: 10}\n" MODEL(""),
     "log.payload_log_max_bytes: expected an integer in 1024..1099511627776, "
     "got 10"},
    {"log: {payload_log_backups: -1}\n" MODEL(""),
     "log.payload_log_backups: expected an integer in 0..1000, got -1"},
    {MODEL(", payload_log: {rate: 1.5}"),
     "models[0].payload_log.rate: expected a number in 0..1, got 1.5"},
    {MODEL(", payload_log: {rat: 0.5}"),
     "models[0].payload_log.rat: unknown key"},
    {"log: {access_log: yes}\n" MODEL(""),
     "log.access_log: expected true or false, got \"yes\""},
    /* worker command */
    {"workers: {command: []}\n" MODEL(""),
     "workers.command: expected 1..256 strings, got 0"},
    {"workers: {command: python3}\n" MODEL(""),
     "workers.command: expected a list of strings, got \"python3\""},
    {"workers: {command: [python3, 3]}\n" MODEL(""),
     "workers.command[1]: expected a string, got 3"},
    /* tensors */
    {MODEL(", inputs: {}"),
     "models[0].inputs: expected a list of tensors, got a mapping"},
    {MODEL(", inputs: [x]"),
     "models[0].inputs[0]: expected a mapping, got \"x\""},
    {MODEL(", inputs: [{name: x, shape: [1]}]"),
     "models[0].inputs[0].datatype: required"},
    {MODEL(", inputs: [{name: x, datatype: FP32}]"),
     "models[0].inputs[0].shape: required"},
    {MODEL(", inputs: [{datatype: FP32, shape: [1]}]"),
     "models[0].inputs[0].name: required"},
    {MODEL(", inputs: [{name: x, datatype: FP33, shape: [1]}]"),
     "models[0].inputs[0].datatype: unknown datatype \"FP33\""},
    {MODEL(", inputs: [{name: x, datatype: 32, shape: [1]}]"),
     "models[0].inputs[0].datatype: expected a datatype name, got 32"},
    {MODEL(", outputs: [{name: y, datatype: FP32, shape: [1, -2]}]"),
     "models[0].outputs[0].shape[1]: expected -1 (variable) or a size >= 0, "
     "got -2"},
    {MODEL(", outputs: [{name: y, datatype: FP32, shape: 4}]"),
     "models[0].outputs[0].shape: expected a list of dimensions, got 4"},
    {MODEL(", outputs: [{name: y, datatype: FP32,"
           " shape: [1,2,3,4,5,6,7,8,9]}]"),
     "models[0].outputs[0].shape: at most 8 dimensions, got 9"},
    {MODEL(", inputs: [{name: x, datatype: FP32, shape: [1]},"
           " {name: x, datatype: FP64, shape: [2]}]"),
     "models[0].inputs[1].name: duplicate tensor name \"x\" "
     "(also models[0].inputs[0])"},
    {MODEL(", inputs: [{name: x, datatype: FP32, shape: [1], dims: 2}]"),
     "models[0].inputs[0].dims: unknown key"},
    {MODEL(", parameters: [1]"),
     "models[0].parameters: expected a mapping, got a list"},
    /* several models */
    {"models:\n  - {name: a, runtime: r, path: p}\n"
     "  - {name: b, runtime: r, path: p, version: 3}\n"
     "  - {name: b, version: '3', runtime: r, path: q}\n",
     "models[2]: duplicate model \"b\" version \"3\" (also models[1])"},
    {"models:\n  - {name: a, runtime: r, path: p}\n"
     "  - {name: a, runtime: r, path: p, version: 2,\n"
     "     inputs: [{name: x, datatype: FP16, shape: [1]}]}\n"
     "  - {name: c, runtime: r, path: p, inputs: [{name: x, datatype: FP8,"
     " shape: [1]}]}\n",
     "models[2].inputs[0].datatype: unknown datatype \"FP8\""},
    /* routes (the router checks that targets exist) */
    {MODEL("") "routes: {}\n",
     "routes: expected a list of mappings, got a mapping"},
    {MODEL("") "routes: [{split: [{model: m, weight: 1}]}]\n",
     "routes[0].name: required"},
    {MODEL("") "routes: [{name: r}]\n", "routes[0].split: required"},
    {MODEL("") "routes: [{name: r, split: []}]\n",
     "routes[0].split: must list at least 1"},
    {MODEL("") "routes: [{name: r, split: [{model: m, weight: -1}]}]\n",
     "routes[0].split[0].weight: expected a number in 0..1e+09, got -1"},
    {MODEL("") "routes: [{name: r, split: [{model: m}]}]\n",
     "routes[0].split[0].weight: required"},
    {MODEL("") "routes: [{name: r, split: [{model: m, weight: 1, w: 2}]}]\n",
     "routes[0].split[0].w: unknown key"},
    {MODEL("") "routes: [{name: r, split: [{model: m, weight: 1}],"
               " shadow: {model: m, rate: 1.5}}]\n",
     "routes[0].shadow.rate: expected a number in 0..1, got 1.5"},
    {MODEL("") "routes: [{name: r, split: [{model: m, weight: 1}],"
               " shadow: {rate: 1}}]\n",
     "routes[0].shadow.model: required"},
    {MODEL("") "routes: [{name: r, split: [{model: m, weight: 1}],"
               " sticky_header: 'x y'}]\n",
     "routes[0].sticky_header: expected 1..128 characters of [A-Za-z0-9_.-], "
     "got \"x y\""},
    /* YAML-level errors come through with their place */
    {"models: [1, 2\n", "line 2, column 1: did not find expected ',' or ']' "
                        "(while parsing a flow sequence at line 1, column 9)"},
    {"models: 1\nmodels: 2\n", "line 2, column 1: duplicate key \"models\""},
    {"", "line 1, column 1: the document is empty"},
};

static void test_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
    berth_config c;
    memset(&c, 0xa5, sizeof c);
    berth_errmsg err = {{0}};
    int rc = parse(error_cases[i].text, &c, &err);
    if (rc != BERTH_E_CONFIG)
      fail_msg("case %zu: rc %d for %s", i, rc, error_cases[i].text);
    if (strcmp(err.msg, error_cases[i].msg) != 0)
      fail_msg("case %zu:\n  got  %s\n  want %s", i, err.msg,
               error_cases[i].msg);
    assert_true(all_zero(&c, sizeof c));
  }
}

/* gateway: turns the empty models list into a gateway's document. */
static void test_gateway(void **state) {
  (void)state;
  static const char text[] =
      "gateway:\n  replicas:\n    - {name: a, url: 'http://127.0.0.1:9001'}\n"
      "  eject_for_ms: 250\nmodels: []\n";
  berth_config c;
  berth_errmsg err;
  assert_int_equal(berth_config_parse(text, strlen(text), &c, &err), BERTH_OK);
  assert_true(berth_config_gateway_on(&c));
  assert_int_equal(c.n_models, 0);
  assert_int_equal(c.gateway.n_replicas, 1);
  assert_string_equal(c.gateway.replicas[0].name, "a");
  assert_string_equal(c.gateway.replicas[0].url, "http://127.0.0.1:9001");
  assert_int_equal(c.gateway.health_interval_ms, 1000);
  assert_int_equal(c.gateway.eject_after_failures, 3);
  assert_int_equal(c.gateway.eject_for_ms, 250);
  assert_int_equal(c.gateway.retries, 1);
  assert_int_equal(c.gateway.connections_per_replica, 2);
  assert_false(c.gateway.allow_remote);
  berth_config_clear(&c);
  static const char plain[] = MODEL("");
  assert_int_equal(berth_config_parse(plain, strlen(plain), &c, &err),
                   BERTH_OK);
  assert_false(berth_config_gateway_on(&c));
  berth_config_clear(&c);
}

static void test_routes(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse(MODEL("") "routes:\n"
                           "  - name: fraud\n"
                           "    split:\n"
                           "      - {model: m, version: 1, weight: 95}\n"
                           "      - {model: m, version: '2', weight: 5.5}\n"
                           "    sticky_header: X-User\n"
                           "    shadow: {model: m, version: 3}\n"
                           "  - {name: ab, split: [{model: m, weight: 0}]}\n",
                 &c, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_int_equal(c.n_routes, 2);
  berth_route_config *r = &c.routes[0];
  assert_string_equal(r->name, "fraud");
  assert_int_equal(r->n_split, 2);
  assert_string_equal(r->split[0].model, "m");
  assert_string_equal(r->split[0].version, "1");
  assert_true(r->split[0].weight == 95.0);
  assert_string_equal(r->split[1].version, "2");
  assert_true(r->split[1].weight == 5.5);
  assert_string_equal(r->sticky_header, "X-User");
  assert_string_equal(r->shadow.model, "m");
  assert_string_equal(r->shadow.version, "3");
  assert_true(r->shadow.rate == 1.0);
  r = &c.routes[1];
  assert_null(r->split[0].version);
  assert_null(r->sticky_header);
  assert_null(r->shadow.model);
  berth_config_clear(&c);

  /* one entry, as the admin API parses it */
  json_t *doc = json_pack("{s:s, s:[{s:s, s:i}], s:{s:s, s:f}}", "name", "x",
                          "split", "model", "m", "weight", 1, "shadow", "model",
                          "m", "rate", 0.25);
  berth_route_config one;
  assert_int_equal(berth_config_parse_route_entry(doc, "", &one, &err),
                   BERTH_OK);
  assert_true(one.shadow.rate == 0.25);
  berth_config_route_clear(&one);
  json_object_set_new(json_array_get(json_object_get(doc, "split"), 0),
                      "weight", json_string("lots"));
  assert_int_equal(berth_config_parse_route_entry(doc, "", &one, &err),
                   BERTH_E_CONFIG);
  assert_string_equal(err.msg, "split[0].weight: expected a number in "
                               "0..1e+09, got \"lots\"");
  assert_true(all_zero(&one, sizeof one));
  json_decref(doc);
}

static void test_browser_lists(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  int rc = parse("server:\n  allowed_hosts: [berth.internal, '*']\n"
                 "  cors_origins: ['https://app.example']\n"
                 "models:\n  - name: iris\n    runtime: sklearn\n"
                 "    path: /models/iris.joblib\n",
                 &c, &err);
  assert_int_equal(rc, BERTH_OK);
  assert_int_equal(c.n_allowed_hosts, 2);
  assert_string_equal(c.allowed_hosts[0], "berth.internal");
  assert_string_equal(c.allowed_hosts[1], "*");
  assert_null(c.allowed_hosts[2]);
  assert_int_equal(c.n_cors_origins, 1);
  assert_string_equal(c.cors_origins[0], "https://app.example");
  berth_config_clear(&c);
  rc = parse("server: {cors_origins: 'https://app.example'}\n"
             "models: [{name: m, runtime: sklearn, path: /m}]\n",
             &c, &err);
  assert_int_equal(rc, BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "server.cors_origins: expected a list"));
  rc = parse("server: {allowed_hosts: ['']}\n"
             "models: [{name: m, runtime: sklearn, path: /m}]\n",
             &c, &err);
  assert_int_equal(rc, BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "server.allowed_hosts[0]"));
}

static void test_null_error_buffer(void **state) {
  (void)state;
  berth_config c;
  assert_int_equal(berth_config_parse("models: []", 10, &c, NULL),
                   BERTH_E_CONFIG);
  assert_int_equal(berth_config_parse("a: *x", 5, &c, NULL), BERTH_E_CONFIG);
  assert_true(all_zero(&c, sizeof c));
}

static void test_all_datatypes(void **state) {
  (void)state;
  static const char *const names[] = {
      "BOOL",  "UINT8", "UINT16", "UINT32", "UINT64", "INT8",  "INT16",
      "INT32", "INT64", "FP16",   "FP32",   "FP64",   "BYTES", "BF16"};
  static const berth_dtype want[] = {
      BERTH_DT_BOOL,   BERTH_DT_UINT8, BERTH_DT_UINT16, BERTH_DT_UINT32,
      BERTH_DT_UINT64, BERTH_DT_INT8,  BERTH_DT_INT16,  BERTH_DT_INT32,
      BERTH_DT_INT64,  BERTH_DT_FP16,  BERTH_DT_FP32,   BERTH_DT_FP64,
      BERTH_DT_BYTES,  BERTH_DT_BF16};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char text[256];
    snprintf(text, sizeof text,
             MODEL(", outputs: [{name: y, datatype: %s, shape: [-1]}]"),
             names[i]);
    berth_config c;
    berth_errmsg err = {{0}};
    assert_int_equal(parse(text, &c, &err), BERTH_OK);
    assert_int_equal(c.models[0].outputs[0].dtype, want[i]);
    berth_config_clear(&c);
  }
}

/* ---- berth_yaml_load ------------------------------------------------- */

typedef struct typing_case {
  const char *yaml; /* the value of key v */
  const char *json; /* what it becomes */
} typing_case;

static const typing_case typing_cases[] = {
    {"", "null"},
    {"~", "null"},
    {"null", "null"},
    {"Null", "null"},
    {"NULL", "null"},
    {"nULL", "\"nULL\""},
    {"true", "true"},
    {"True", "true"},
    {"TRUE", "true"},
    {"false", "false"},
    {"False", "false"},
    {"FALSE", "false"},
    {"yes", "\"yes\""},
    {"on", "\"on\""},
    {"0", "0"},
    {"-17", "-17"},
    {"+17", "17"},
    {"007", "7"},
    {"0o17", "15"},
    {"0x1F", "31"},
    {"0xff", "255"},
    {"0x", "\"0x\""},
    {"0o8", "\"0o8\""},
    {"-0x1", "\"-0x1\""},
    {"9223372036854775807", "9223372036854775807"},
    {"-9223372036854775808", "-9223372036854775808"},
    {"1.5", "1.5"},
    {"-2.5e3", "-2500.0"},
    {".5", "0.5"},
    {"1.", "1.0"},
    {"1e2", "100.0"},
    {"1E+2", "100.0"},
    {"1e", "\"1e\""},
    {".", "\".\""},
    {"1.2.3", "\"1.2.3\""},
    {"'12'", "\"12\""},
    {"\"true\"", "\"true\""},
    {"'null'", "\"null\""},
    {"!!str 12", "\"12\""},
    {"! 12", "\"12\""},
    {"|\n  12\n", "\"12\\n\""},
    {">-\n  a\n  b\n", "\"a b\""},
    {"hello world", "\"hello world\""},
    {"[1, a, {b: c}]", "[1, \"a\", {\"b\": \"c\"}]"},
    {"\"\\u00e9\"", "\"\\u00e9\""},
};

static void test_yaml_typing(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof typing_cases / sizeof typing_cases[0]; i++) {
    char text[256];
    snprintf(text, sizeof text, "v: %s", typing_cases[i].yaml);
    berth_errmsg err = {{0}};
    json_t *root = load(text, &err);
    if (root == NULL)
      fail_msg("case %zu (%s): %s", i, typing_cases[i].yaml, err.msg);
    json_t *want = json_loads(typing_cases[i].json, JSON_DECODE_ANY, NULL);
    assert_non_null(want);
    json_t *got = json_object_get(root, "v");
    if (!json_equal(got, want) || json_typeof(got) != json_typeof(want)) {
      char *s = json_dumps(got, JSON_ENCODE_ANY);
      fail_msg("case %zu (%s): got %s want %s", i, typing_cases[i].yaml, s,
               typing_cases[i].json);
    }
    json_decref(want);
    json_decref(root);
  }
}

static void test_yaml_json_input(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  const char *text = "{\"a\":1,\"b\":[true,null,\"x\",-2.5e-1],"
                     "\"c\":{\"d\":\"\\n\\\"\"}}";
  json_t *root = load(text, &err);
  if (root == NULL)
    fail_msg("%s", err.msg);
  json_t *want = json_loads(text, 0, NULL);
  assert_true(json_equal(root, want));
  json_decref(want);
  json_decref(root);
}

typedef struct load_error_case {
  const char *text;
  const char *msg;
} load_error_case;

static const load_error_case load_errors[] = {
    {"a: &x 1\nb: *x\n", "line 1, column 4: anchors (&name) are not "
                         "supported"},
    {"a: [1]\nb: *x\n", "line 2, column 4: aliases (*x) are not supported"},
    {"&k a: 1\n", "line 1, column 1: anchors (&name) are not supported"},
    {"a: 1\nb:\n  c: 2\n  c: 3\n", "line 4, column 3: duplicate key \"c\""},
    {"{a: 1, a: 2}", "line 1, column 8: duplicate key \"a\""},
    {"? [a]\n: 1\n", "line 1, column 3: mapping keys must be scalars"},
    {"a: 1\n---\nb: 2\n", "line 2, column 1: only one document is allowed"},
    {"a: 99999999999999999999\n",
     "line 1, column 4: integer 99999999999999999999 is out of range"},
    {"a: -9223372036854775809\n",
     "line 1, column 4: integer -9223372036854775809 is out of range"},
    {"a: 0x10000000000000000\n",
     "line 1, column 4: integer 0x10000000000000000 is out of range"},
    {"a: .inf\n", "line 1, column 4: .inf cannot be represented (JSON "
                  "numbers are finite)"},
    {"a: -.Inf\n", "line 1, column 4: -.Inf cannot be represented (JSON "
                   "numbers are finite)"},
    {"a: .NaN\n", "line 1, column 4: .NaN cannot be represented (JSON "
                  "numbers are finite)"},
    {"a: 1e999\n", "line 1, column 4: number 1e999 is out of range"},
    {"a: !!int 3\n", "line 1, column 4: tag tag:yaml.org,2002:int is not "
                     "supported"},
    {"a: !foo [1]\n", "line 1, column 4: tag !foo is not supported"},
    {"a: b: c\n", "line 1, column 5: mapping values are not allowed in this "
                  "context"},
    {"a:\n\t- 1\n", "line 2, column 1: found character that cannot start "
                    "any token (while scanning for the next token at line 2, "
                    "column 1)"},
    {"   ", "line 2, column 1: the document is empty"},
};

static void test_yaml_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof load_errors / sizeof load_errors[0]; i++) {
    berth_errmsg err = {{0}};
    json_t *root = load(load_errors[i].text, &err);
    if (root != NULL)
      fail_msg("case %zu: loaded %s", i, load_errors[i].text);
    if (strcmp(err.msg, load_errors[i].msg) != 0)
      fail_msg("case %zu:\n  got  %s\n  want %s", i, err.msg,
               load_errors[i].msg);
  }
}

static void test_yaml_bad_utf8(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  const char text[] = "a: \xff\xfe\n";
  assert_null(berth_yaml_load(text, sizeof text - 1, &err));
  assert_non_null(strstr(err.msg, "byte offset 3"));
  /* an embedded NUL byte is refused, not truncated */
  const char nul[] = "a: b\0c\n";
  assert_null(berth_yaml_load(nul, sizeof nul - 1, &err));
}

static char *nested(int depth, const char *open, const char *close) {
  size_t lo = strlen(open), lc = strlen(close);
  char *s = malloc((size_t)depth * (lo + lc) + 1);
  if (s == NULL)
    fail_msg("out of memory");
  assert_non_null(s);
  char *p = s;
  for (int i = 0; i < depth; i++, p += lo)
    memcpy(p, open, lo);
  for (int i = 0; i < depth; i++, p += lc)
    memcpy(p, close, lc);
  *p = '\0';
  return s;
}

static void test_yaml_depth(void **state) {
  (void)state;
  berth_errmsg err = {{0}};
  char *ok = nested(64, "[", "]");
  json_t *root = load(ok, &err);
  if (root == NULL)
    fail_msg("%s", err.msg);
  json_decref(root);
  free(ok);

  char *deep = nested(65, "[", "]");
  assert_null(load(deep, &err));
  assert_string_equal(err.msg,
                      "line 1, column 65: nesting deeper than 64 levels");
  free(deep);

  char *objs = nested(65, "{a: ", "}");
  assert_null(load(objs, &err));
  assert_non_null(strstr(err.msg, "nesting deeper than 64 levels"));
  free(objs);

  /* Very deep input is refused early, without deep recursion. */
  char *huge = nested(100000, "[", "]");
  assert_null(load(huge, &err));
  assert_non_null(strstr(err.msg, "nesting deeper than 64 levels"));
  free(huge);

  /* The same bound holds through the config parser. */
  char *params = nested(70, "{a: ", "}");
  size_t cap = strlen(params) + 64;
  char *text = malloc(cap);
  if (text == NULL) {
    free(params);
    fail();
    return;
  }
  snprintf(text, cap, MODEL(", parameters: %s"), params);
  berth_config c;
  assert_int_equal(parse(text, &c, &err), BERTH_E_CONFIG);
  assert_non_null(strstr(err.msg, "nesting deeper than 64 levels"));
  free(text);
  free(params);
}

/* ---- autoscaling and the memory budget (docs/autoscaling.md) ---------- */

#define AS_MODEL "models:\n  - name: m\n    runtime: custom\n    path: /x\n"

static void expect_error(const char *text, const char *want) {
  berth_config c;
  berth_errmsg err = {{0}};
  assert_int_equal(parse(text, &c, &err), BERTH_E_CONFIG);
  if (strstr(err.msg, want) == NULL)
    fail_msg("error \"%s\" lacks \"%s\"", err.msg, want);
}

static void test_autoscaling_defaults(void **state) {
  (void)state;
  berth_config c;
  berth_errmsg err = {{0}};
  assert_int_equal(parse(AS_MODEL "    autoscaling: {}\n", &c, &err), BERTH_OK);
  const berth_autoscale_config *a = &c.models[0].autoscale;
  assert_true(a->enabled);
  assert_int_equal(a->min_instances, 1);
  assert_true(a->max_instances >= 1); /* the cores */
  assert_true(a->target_ongoing_requests == 2);
  assert_true(a->upscale_delay_s == 30);
  assert_true(a->downscale_delay_s == 600);
  assert_true(a->scale_to_zero_after_s == 600); /* = downscale_delay_s */
  assert_true(a->stable_window_s == 60);
  assert_true(a->panic_window_s == 6);
  assert_true(a->panic_threshold == 2.0);
  assert_int_equal(c.memory_budget, 0);
  berth_config_clear(&c);
  assert_int_equal(parse(AS_MODEL, &c, &err), BERTH_OK);
  assert_false(c.models[0].autoscale.enabled); /* absent: fixed instances */
  berth_config_clear(&c);
  assert_int_equal(parse("memory_budget: 1.5GiB\n" AS_MODEL
                         "    autoscaling: {min_instances: 0, max_instances: 3,"
                         " downscale_delay_s: 2, scale_to_zero_after_s: 5}\n",
                         &c, &err),
                   BERTH_OK);
  assert_int_equal(c.memory_budget, 1610612736);
  a = &c.models[0].autoscale;
  assert_int_equal(a->min_instances, 0);
  assert_int_equal(a->max_instances, 3);
  assert_true(a->scale_to_zero_after_s == 5);
  berth_config_clear(&c);
  assert_int_equal(parse("memory_budget: 512MB\n" AS_MODEL, &c, &err),
                   BERTH_OK);
  assert_int_equal(c.memory_budget, 512000000);
  berth_config_clear(&c);
  assert_int_equal(parse("memory_budget: 1048576\n" AS_MODEL, &c, &err),
                   BERTH_OK);
  assert_int_equal(c.memory_budget, 1048576);
  berth_config_clear(&c);
}

static void test_autoscaling_errors(void **state) {
  (void)state;
  expect_error(AS_MODEL
               "    autoscaling: {min_instances: 4, max_instances: 2}\n",
               "models[0].autoscaling: min_instances: must be <= "
               "max_instances (2), got 4");
  expect_error(AS_MODEL "    autoscaling: {target_ongoing_requests: 0}\n",
               "models[0].autoscaling.target_ongoing_requests: expected a "
               "number in 0.01..1e+06");
  expect_error(AS_MODEL "    autoscaling: {max_instance: 2}\n",
               "models[0].autoscaling.max_instance: unknown key");
  expect_error(AS_MODEL "    autoscaling: {max_instances: 0}\n",
               "models[0].autoscaling.max_instances: expected an integer in "
               "1..256");
  expect_error(AS_MODEL "    autoscaling: {stable_window_s: 2, "
                        "panic_window_s: 3}\n",
               "panic_window_s: must be > 0 and <= stable_window_s");
  expect_error(AS_MODEL "    autoscaling: {panic_threshold: 0.5}\n",
               "models[0].autoscaling.panic_threshold: expected a number in "
               "1..1000");
  expect_error(AS_MODEL "    autoscaling: {upscale_delay_s: -1}\n",
               "upscale_delay_s: expected a number in 0..86400");
  expect_error(AS_MODEL "    autoscaling: 3\n",
               "models[0].autoscaling: expected a mapping");
  expect_error(AS_MODEL "    instances: 5\n"
                        "    autoscaling: {max_instances: 4}\n",
               "instances (5, the starting count with autoscaling) must lie "
               "within min_instances (1) and max_instances (4)");
  expect_error(AS_MODEL "    sequence_batching: {}\n    autoscaling: {}\n",
               "cannot be combined with sequence_batching");
  expect_error("memory_budget: 2 GiBs\n" AS_MODEL,
               "memory_budget: expected a size in bytes");
  expect_error("memory_budget: -5\n" AS_MODEL,
               "memory_budget: expected a size in bytes");
  expect_error("memory_budget: [1]\n" AS_MODEL,
               "memory_budget: expected a size in bytes");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_autoscaling_defaults),
      cmocka_unit_test(test_autoscaling_errors),
      cmocka_unit_test(test_minimal_defaults),
      cmocka_unit_test(test_full_yaml),
      cmocka_unit_test(test_full_json),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_routes),
      cmocka_unit_test(test_browser_lists),
      cmocka_unit_test(test_null_error_buffer),
      cmocka_unit_test(test_all_datatypes),
      cmocka_unit_test(test_gateway),
      cmocka_unit_test(test_yaml_typing),
      cmocka_unit_test(test_yaml_json_input),
      cmocka_unit_test(test_yaml_errors),
      cmocka_unit_test(test_yaml_bad_utf8),
      cmocka_unit_test(test_yaml_depth),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
