"""Bad arguments stop the start with exit code 2 and a message naming the option."""

from pathlib import Path

import pytest

from loadgen.cli import main
from tests.otel.support import free_port


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "127.0.0.1:8001"], "--target: '127.0.0.1:8001' is not grpc://HOST:PORT"),
        (["--target", "http://localhost"], "--target: 'http://localhost' is not grpc://"),
        (["--concurrency", "0"], "--concurrency: 0 is not a whole number of at least 1"),
        (["--rate", "-5"], "--rate: -5 is not above 0"),
        (["--rate", "5", "--concurrency", "2"], "--concurrency: not allowed with argument --rate"),
        (
            ["--duration", "5", "--requests", "9"],
            "--requests: not allowed with argument --duration",
        ),
        (["--requests", "9", "--warmup", "1"], "--warmup: works with --duration only"),
        (["--malformed-ratio", "1.5"], "--malformed-ratio: 1.5 is not a ratio from 0 to 1"),
        (["--fault-delay", "-1"], "--fault-delay: -1 is not from 0 to 60000 ms"),
        (
            ["--malformed-ratio", "0.5", "--fault-error-ratio", "0.6"],
            "--malformed-ratio + --fault-error-ratio + --fault-delay-ratio is 1.1",
        ),
        (["--burst", "4:2"], "--burst: '4:2' is not FACTOR:SECONDS:EVERY"),
        (
            ["--burst", "4:10:10"],
            "--burst: '4:10:10': needs FACTOR above 1 and 0 < SECONDS < EVERY",
        ),
        (["--drift", "sideways"], "--drift: invalid choice: 'sideways'"),
        (["--label-ratio", "2"], "--label-ratio: 2 is not a ratio from 0 to 1"),
        (["--label-ratio", "0.3", "--label-delay", "-1"], "--label-delay: -1 is below 0"),
        (["--concurrency", "abc"], "--concurrency: 'abc' is not a whole number"),
        (["--rate", "inf"], "--rate: inf is not a finite number"),
        (["--rate", "fast"], "--rate: 'fast' is not a number"),
        (["--duration", "1", "--warmup", "nan"], "--warmup: nan is not a finite number"),
        (["--timeout", "inf"], "--timeout: inf is not a finite number"),
        (["--wait-ready", "-2"], "--wait-ready: -2 is below 0"),
        (["--label-ratio", "0.3", "--label-delay", "nan"], "--label-delay: nan is not a finite"),
        (["--burst", "inf:1:2"], "--burst: 'inf:1:2' is not FACTOR:SECONDS:EVERY"),
        (["--wrong-labels"], "--wrong-labels: needs --label-ratio above 0"),
        (
            ["--api-key-env", "NO_SUCH_VARIABLE_4711"],
            "--api-key-env: the environment variable NO_SUCH_VARIABLE_4711 is not set or empty",
        ),
    ],
)
def test_bad_arguments_name_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)

    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_a_target_that_is_not_ready_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()

    code = main(["--target", f"grpc://127.0.0.1:{port}", "--wait-ready", "0.3"])

    assert code == 1
    assert f"grpc://127.0.0.1:{port}: not ready after 0.3 s: UNAVAILABLE" in capsys.readouterr().out


def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOAD_API_KEY", "secret-4711\r\nX-Injected: 1")
    with pytest.raises(SystemExit) as stopped:
        main(["--api-key-env", "LOAD_API_KEY"])

    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "--api-key-env: the key in LOAD_API_KEY holds a character a header cannot carry" in error
    assert "secret-4711" not in error


def test_a_json_path_that_cannot_be_written_is_refused_before_the_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    for path, message in (
        (tmp_path, f"--json: {tmp_path} is a directory"),
        (blocker / "out.json", f"--json: cannot create {blocker}"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(["--target", f"grpc://127.0.0.1:{free_port()}", "--json", str(path)])

        assert stopped.value.code == 2
        assert message in capsys.readouterr().err
