"""Every shell command in the docs is run by a test, or is marked in the docs as needing a GPU host or Docker.

``RUN_BY`` is the explicit list: each documented command and the test that runs it -- the same program with the same
flags, on the test's own ports, folders and small models where the docs name yours (`/models/...`, `8125`, 5555).
The HTTP examples (`curl`) are run here verbatim against a real bridge, only the port replaced.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from doc_commands import commands_in
from harness import REPO_ROOT

DOCUMENTS = sorted((REPO_ROOT / "docs").glob("*.md")) + [
    REPO_ROOT / "README.md", REPO_ROOT / "examples" / "README.md", REPO_ROOT / "model_repository" / "README.md"]

CURL_RUN_HERE = "tests/docs/test_doc_commands.py::test_the_documented_curl_commands_work"
THE_SUITE_ITSELF = "make test runs this suite"

RUN_BY = {
    # README.md
    "make serve": "tests/test_make_serve.py::test_make_serve_brings_up_both_models_and_the_readme_snippets_run",
    "make test": THE_SUITE_ITSELF,
    # docs/PERFORMANCE.md
    "make install": THE_SUITE_ITSELF,  # make test installs first
    "bert-serving-benchmark -output docs/performance":
        "tests/bench/test_benchmark_cli.py::test_smoke_benchmark_writes_tables_ratios_and_plots",
    "python -m bert_bench.models_memory -output bench/results/models_memory":
        "tests/bench/test_models_memory.py::test_models_memory_benchmark_smoke",
    "bert-serving-benchmark -rerank -output bench/results": "tests/bench/test_rerank_benchmark.py::test_rerank_benchmark_smoke",
    "bert-serving-benchmark -model modernbert-base -output docs/performance":
        "tests/rotary/test_long_context_benchmark.py::"
        "test_long_context_benchmark_writes_speeds_and_the_long_requests_peak_rss",
    "bert-serving-start -pooling_layer -1 -max_seq_len 128":
        "tests/bridge/test_legacy_client_end_to_end.py::test_last_layer_at_128_equals_sentence_transformers_without_normalize",
    "bert-export -output model_repository -name minilm":
        "tests/exporter/test_export_default_model.py::test_default_model_matches_transformers",
    "bert-serving-start -model_dir model_repository/minilm":
        "tests/bridge/test_lifecycle.py::test_only_the_served_model_is_loaded_and_the_repository_stays_clean",
    "bert-serving-triton --model-repository model_repository":
        "tests/bridge/test_server_behaviour.py::test_triton_down_gives_a_readable_error_and_service_resumes",
    "bert-serving-terminate -port 5555": "tests/bridge/test_terminate.py::test_a_running_bridge_is_stopped_and_that_is_confirmed",
    "bert-serving-cache list": "tests/bridge/test_cache_admin.py::test_a_running_bridge_records_and_holds_its_cache_entry",
    # docs/RELIABILITY.md
    "bert-serving-soak -num_client 16 -duration 600 -output docs/reliability":
        "tests/bench/test_soak.py::test_30_second_soak_loses_nothing_and_every_row_matches",
    # docs/CLIENT.md
    "pip install ./client": "tests/client/test_client_fresh_venv.py::test_the_client_alone_in_a_fresh_venv_works_against_the_bridge",
    "pip install './client[progress]'":
        "tests/client/test_client_fresh_venv.py::test_the_client_alone_in_a_fresh_venv_works_against_the_bridge",
    # docs/EXPORT.md
    "bert-export -target embedded -output model_repository -name minilm":
        "tests/exporter/test_export_default_model.py::test_default_model_matches_transformers",
    "bert-export -model_dir ./bert-base-uncased -target onnx -output gpu_repository -name bert":
        "tests/exporter/test_export_targets.py::test_onnx_target_with_gpu_instances_and_tensorrt_accelerator",
    "bert-export -model_dir ./bert-base-chinese -cased_tokenization -target onnx -output gpu_repository -name zh":
        "tests/exporter/test_export_targets.py::test_onnx_target_with_gpu_instances_and_tensorrt_accelerator",
    "bert-export -model_dir ./uncased_L-12_H-768_A-12 -target onnx -output gpu_repository -name bert":
        "tests/exporter/test_export_sources.py::test_google_checkpoint_reads_the_same_tensors",
    "bert-export -model_dir ./multi_cased_L-12_H-768_A-12 -cased_tokenization -target onnx -output gpu_repository -name multi":
        "tests/exporter/test_export_targets.py::test_onnx_target_with_gpu_instances_and_tensorrt_accelerator",
    "bert-export -model_dir ./uncased_L-12_H-768_A-12 -tuned_model_dir ./my_classifier -ckpt_name model.ckpt-3000 "
    "-target onnx -output gpu_repository -name tuned": "tests/exporter/test_export_pooling.py::test_tuned_weights_are_the_ones_used",
    "bert-export -pooling_strategy NONE -max_seq_len NONE -target embedded -output model_repository -name tokens":
        "tests/exporter/test_export_triton.py::test_served_token_vectors_for_any_length",
    "bert-export -pooling_strategy REDUCE_MEAN_MAX -pooling_layer -4 -3 -2 -1 -mask_cls_sep -output model_repository -name mm":
        "tests/exporter/test_export_pooling.py::test_onnx_equals_original_pooling_over_transformers",
    "bert-export -model_dir all-MiniLM-L6-v2 -output model_repository -name minilm":
        "tests/exporter/test_export_default_model.py::test_default_model_matches_transformers",
    "bert-export -model_dir all-MiniLM-L6-v2 -pooling_strategy AUTO -output model_repository -name minilm-st":
        "tests/bridge/test_sentence_transformers_serving.py::test_an_exported_auto_folder_is_served_with_or_without_auto",
    "bert-serving-triton --model-repository model_repository --grpc-port 8001":
        "tests/bridge/test_server_behaviour.py::test_triton_down_gives_a_readable_error_and_service_resumes",
    "bert-serving-start -model_dir model_repository/minilm --triton-url localhost:8001":
        "tests/bridge/test_server_behaviour.py::test_triton_down_gives_a_readable_error_and_service_resumes",
    "bert-export -target savedmodel -output gpu_repository -name bert_tf":
        "tests/exporter/test_export_targets.py::test_savedmodel_target",
    # docs/SERVER.md
    "bert-serving-start": "tests/bridge/test_legacy_client_end_to_end.py::test_unmodified_client_encodes_with_default_checks",
    "bert-serving-start -model_dir /models/uncased_L-12_H-768_A-12 -pooling_layer -4 -3 -2 -1 -max_seq_len 64":
        "tests/exporter/test_export_served_by_bridge.py::test_checkpoint_folders_are_served_on_the_fly",
    "bert-serving-start -model_dir /models/all-MiniLM-L6-v2":
        "tests/bridge/test_legacy_client_end_to_end.py::test_default_vectors_equal_transformers_layer_minus_2_mean_pool",
    "bert-serving-start -model_dir /models/all-MiniLM-L6-v2 -pooling_strategy AUTO":
        "tests/bridge/test_sentence_transformers_serving.py::test_auto_serves_what_sentence_transformers_encodes",
    "bert-serving-start --model-repository model_repository -http_port 8125":
        "tests/bridge/test_many_models.py::test_a_whole_repository_serves_its_good_models_and_reports_the_broken_ones",
    "bert-serving-start -model_dir model_repository/minilm -model_dir model_repository/all-MiniLM-L6-v2 -http_port 8125":
        "tests/test_make_serve.py::test_make_serve_brings_up_both_models_and_the_readme_snippets_run",
    "bert-serving-start -model_dir minilm=/models/minilm -model_dir all-MiniLM-L6-v2=/models/minilm-st "
    "-model_dir tiny-cls=/models/tiny -http_port 8125":
        "tests/bridge/test_many_models.py::test_the_1_10_client_gets_the_original_vectors_of_the_default_model",
    "bert-serving-terminate -ip gpu-host -port 7000 -timeout 20000 -server_public_key server.key "
    "-client_certificate admin.key_secret":
        "tests/bridge/test_security.py::test_an_allowed_curve_client_may_terminate_from_another_host",
    "bert-serving-cache prune": "tests/bridge/test_cache_admin.py::test_prune_by_age_keeps_recent_entries_and_drops_incomplete_ones",
    "bert-serving-cache prune --older-than 7 --dry-run":
        "tests/bridge/test_cache_admin.py::test_prune_by_age_keeps_recent_entries_and_drops_incomplete_ones",
    "bert-serving-cache prune --all --cache-dir /srv/cache":
        "tests/bridge/test_cache_admin.py::test_prune_keeps_what_a_running_bridge_uses_and_removes_the_rest",
    # docs/HTTP.md
    "bert-serving-start -http_port 8125": "tests/http_api/test_http_routes.py::test_encode_json_matches_zeromq_and_echoes_the_id",
    "bert-serving-start -http_port 8125 -http_max_connect 64 --api-key s3cret -cors https://app.example.com":
        "tests/http_api/test_http_limits.py::test_data_routes_need_the_api_key",
    "bert-serving-start -http_port 8125 -http_max_connect 64 &": "tests/http_api/test_http_load_smoke.py::test_http_load_benchmark_smoke",
    "python -m bert_bench.http_load -port 5555 -port_out 5556 -http_port 8125 -bridge_pid $!":
        "tests/http_api/test_http_load_smoke.py::test_http_load_benchmark_smoke",
    "bert-export -model_dir ./ms-marco-MiniLM-L6-v2 -output model_repository -name minilm-reranker":
        "tests/heads/test_heads_serving.py::test_v1_models_says_each_models_task_labels_and_activation",
    "bert-export -model_dir ./roberta-large-mnli -output model_repository -name nli":
        "tests/heads/test_heads_serving.py::test_v1_models_says_each_models_task_labels_and_activation",
    "bert-export -model_dir ./splade-cocondenser-ensembledistil -pooling_strategy SPLADE -output model_repository "
        "-name splade":
        "tests/heads/test_heads_serving.py::test_v1_models_says_each_models_task_labels_and_activation",
    "bert-serving-start --model-repository model_repository -http_port 8126":
        "tests/heads/test_heads_serving.py::test_v1_models_says_each_models_task_labels_and_activation",
    # docs/SECURITY.md
    "bert-serving-keys server -output keys":
        "tests/bridge/test_security.py::test_the_keys_command_writes_a_private_secret_and_never_overwrites",
    "bert-serving-keys alice -output keys":
        "tests/bridge/test_security.py::test_the_keys_command_writes_a_private_secret_and_never_overwrites",
    "bert-serving-start --curve-certificate keys/server.key_secret --curve-allowed-clients keys/clients":
        "tests/bridge/test_security.py::test_an_allowed_client_gets_the_vectors_of_a_plain_bridge",
    "bert-serving-terminate -ip gpu-host -server_public_key keys/server.key -client_certificate keys/alice.key_secret":
        "tests/bridge/test_security.py::test_an_allowed_curve_client_may_terminate_from_another_host",
    # model_repository/README.md
    "bert-serving-triton --model-repository model_repository --grpc-port 8001 --http-port 8000":
        "tests/bridge/test_server_behaviour.py::test_triton_down_gives_a_readable_error_and_service_resumes",
    # examples/README.md
    'python examples/semantic_search.py "can I run the server without a GPU"':
        "tests/examples/test_examples.py::test_semantic_search_ranks_the_paraphrased_question_first",
    "python examples/async_encoding.py --num-batches 10": "tests/examples/test_examples.py::test_async_encoding_receives_every_batch",
    "python examples/broadcast.py": "tests/examples/test_examples.py::test_broadcast_reaches_both_clones",
    "python examples/tf_data_pipeline.py": "tests/examples/test_examples.py::test_tf_data_pipeline_encodes_every_line",
    "python examples/text_classifier.py": "tests/examples/test_examples.py::test_text_classifier_beats_chance",
    "python examples/tfrecord.py --output /tmp/encodings.tfrecord":
        "tests/examples/test_examples.py::test_tfrecord_reads_back_what_it_wrote",
    "bert-serving-start -pooling_strategy NONE -show_tokens_to_client -port 5557 -port_out 5558":
        "tests/examples/test_examples.py::test_token_embeddings_have_a_vector_per_token_and_zero_padding",
    "python examples/token_embeddings.py --port 5557 --port_out 5558":
        "tests/examples/test_examples.py::test_token_embeddings_have_a_vector_per_token_and_zero_padding",
    "python examples/own_tokenizer.py --port 5557 --port_out 5558":
        "tests/examples/test_examples.py::test_own_tokenizer_rows_hold_only_the_given_tokens",
    "python examples/http_json.py --http_port 8125": "tests/examples/test_examples.py::test_http_json_encodes_and_reports_status",
    "python examples/dashboard.py --http_port 8125":
        "tests/examples/test_examples.py::test_dashboard_shows_the_status_and_serves_the_page",
    "python examples/fine_tuned_model.py --output /tmp/finetuned":
        "tests/examples/test_examples.py::test_fine_tuned_model_is_served_end_to_end",
    "python examples/layer_visualization.py --layers -1 -2 -3 -4 -5 -6 --output layers.png":
        "tests/examples/test_examples.py::test_layer_visualization_draws_one_panel_per_layer",
}


def documented_commands():
    return [command for document in DOCUMENTS for command in commands_in(document, REPO_ROOT)]


def test_every_documented_command_is_run_by_a_test_or_marked():
    unaccounted = [f"{c.file}:{c.line}: {c.command}" for c in documented_commands()
                   if not c.marked and c.command not in RUN_BY and not c.command.startswith("curl ")]
    assert not unaccounted, ("commands in the docs that no test runs; add the test to RUN_BY, or mark them "
                             "'# needs a GPU host' / '# needs Docker':\n" + "\n".join(unaccounted))


def test_the_list_names_real_tests_and_only_documented_commands():
    documented = {c.command for c in documented_commands()}
    stale = sorted(set(RUN_BY) - documented)
    assert not stale, f"RUN_BY lists commands the docs no longer show: {stale}"
    for command, test in RUN_BY.items():
        if test == THE_SUITE_ITSELF:
            continue
        path, name = test.split("::")
        source = (REPO_ROOT / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"{command!r}: {test} does not exist"


def test_marked_commands_are_only_gpu_or_docker_ones():
    """The mark is not a way out for a command a CPU machine could run: each marked one uses Docker, a GPU flag or a
    GPU host."""
    gpu_or_docker = re.compile(r"docker|gpu|--trt-accelerator|-device_map|tensorrt|trtexec|pip install -e \.|bert_trt")
    for c in documented_commands():
        if c.marked:
            assert gpu_or_docker.search(c.command), f"{c.file}:{c.line}: marked, but needs neither: {c.command}"


def test_a_document_that_types_commands_bare_says_where_they_are_first():
    """`make install` puts the commands in .venv/bin/, not on PATH: a document showing `bert-...` without that path
    says how to get them (activate the venv) before its first code block."""
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        lines = text.splitlines()
        bare = [c for c in commands_in(document, REPO_ROOT)
                if c.command.startswith("bert-") and not lines[c.line - 1].lstrip().startswith(".venv/bin/")]
        if bare:
            preamble = text[:text.index("```")]
            assert "`source .venv/bin/activate`" in preamble and "`.venv/bin/`" in preamble, \
                f"{document.relative_to(REPO_ROOT)} types {bare[0].command!r} bare (line {bare[0].line}) without " \
                "saying first that the commands are in .venv/bin/"


@pytest.fixture(scope="module")
def http_bridge_8125(http_served):
    """The session's bridge with HTTP (tests/conftest.py): the docs' `-http_port 8125` on a free port."""
    return http_served[1]


@pytest.fixture(scope="module")
def http_bridge_8126(heads_served):
    """The session's bridge serving models with heads (tests/conftest.py): docs/HTTP.md's `-http_port 8126`, whose
    rerank, classify and sparse models it serves under the same names."""
    return heads_served[1].rsplit(":", 1)[1]


@pytest.mark.slow
def test_the_documented_curl_commands_work(http_bridge_8125, http_bridge_8126):
    curls = [c for c in documented_commands() if c.command.startswith("curl ")]
    assert len(curls) >= 10
    for c in curls:
        argv = [word.replace("localhost:8125", f"localhost:{http_bridge_8125}")
                .replace("localhost:8126", f"localhost:{http_bridge_8126}") for word in shlex.split(c.command)]
        result = subprocess.run([*argv, "--silent", "--show-error", "--fail", "--max-time", "60"],
                                capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, f"{c.file}:{c.line}: {c.command}\n{result.stderr}"
        if "/metrics" not in c.command:
            assert json.loads(result.stdout), f"{c.file}:{c.line}: {c.command} answered nothing"


def test_the_extractor_reads_continuations_comments_and_marks(tmp_path):
    document = tmp_path / "doc.md"
    document.write_text("\n".join([
        "```bash",
        ".venv/bin/bert-serving-start -port 7000   # a comment",
        "curl -d '{\"a\": \"#1\"}' \\",
        "  http://localhost:8125/encode",
        "# {\"output\": \"not a command\"}",
        "```",
        "```python",
        "python -c 'not shell'",
        "```",
        "```",
        "# needs Docker:",
        "docker run image",
        "bert-export -target onnx   # needs a GPU host",
        "```",
        "```text",
        "bert-export -model_dir DIR [options]",
        "```",
    ]))
    found = [(c.line, c.command, c.marked) for c in commands_in(document, tmp_path)]
    assert found == [
        (2, "bert-serving-start -port 7000", False),
        (3, "curl -d '{\"a\": \"#1\"}' http://localhost:8125/encode", False),
        (12, "docker run image", True),
        (13, "bert-export -target onnx", True),
    ]
