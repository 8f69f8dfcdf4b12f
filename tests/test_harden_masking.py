"""One masking path for everything written (issue 13, part 2): every credential family in every form it
takes in LLM app text, masked before the byte cap, on span names, events and attributes set directly,
and on eval data. Real OpenTelemetry SDK and real SQLite stores throughout."""

from __future__ import annotations

import json

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import Sanitizer, mask_secrets, mask_value
from ragtrail.tracing._content import sanitize_attributes

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# (family, text holding the secret, the secret itself): each must disappear from the masked text
CASES = [
    ("aws access key id", "key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ("aws secret, env", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    ("aws secret, yaml", f"aws_secret_access_key: {AWS_SECRET}", AWS_SECRET),
    ("aws secret, json", json.dumps({"SecretAccessKey": AWS_SECRET}), AWS_SECRET),
    ("gcp api key", "key=AIzaSyA1234567890abcdefghijklmnopqrstu", "SyA1234567890abcdefghijklmnop"),
    ("gcp oauth token", "ya29.a0AfH6SMBx1234567890abcdefghij", "a0AfH6SMBx1234567890"),
    (
        "gcp service account",
        json.dumps({"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEv\n-----END PRIVATE KEY-----\n"}),
        "MIIEv",
    ),  # fmt: skip
    (
        "azure connection string",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=bXlrZXk0NTY3ODkw+/==;"
        "EndpointSuffix=core.windows.net",
        "bXlrZXk0NTY3ODkw",
    ),  # fmt: skip
    (
        "azure sas",
        "https://a.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbCdEfGhIjKlMnOpQrStUv%3D",
        "AbCdEfGhIjKlMnOp",
    ),
    ("openai", "sk-proj-abcdefghijklmnopqrstuvwxyz123456", "abcdefghijklmnopqrstuvwxyz"),
    ("anthropic", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuv"),
    ("huggingface", "hf_abcdefghijklmnopqrstuvwxyzABCDEF", "abcdefghijklmnopqrstuvwxyz"),
    ("cohere", "COHERE_API_KEY=Zx9aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789a", "Zx9aBcDeFgHiJkLmNoPq"),
    ("mistral", "{'api_key': 'Mx8aBcDeFgHiJkLmNoPqRsTuVwXyZ012'}", "Mx8aBcDeFgHiJkLmNoPq"),
    ("groq", "gsk_abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnopqrstuvwxyz"),
    ("github classic", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz"),
    ("github oauth", "gho_abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghijklmnopqrstuvwxyz"),
    ("github fine-grained", "github_pat_11ABCDEFG0abcdefghijklmn_opqrstuvwxyz0123456789", "abcdefghijklmn_opq"),
    ("gitlab", "glpat-abcdefghij1234567890", "abcdefghij1234567890"),
    ("slack bot", "xoxb-123456789012-abcdefghijkl", "123456789012-abcdefghijkl"),
    ("slack webhook", "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXX", "XXXXXXXXXXXX"),
    ("stripe live", "sk_live_abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
    ("stripe restricted", "rk_live_abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
    ("jwt", "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "dozjgNryP4J3jVmNHl0w5N"),
    ("pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----", "MIIEpAIBAAKCAQEA"),
    ("bearer header", "Authorization: Bearer abcdef0123456789xyz", "abcdef0123456789xyz"),
    ("basic header", "Authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy"),
    ("x-api-key header", "x-api-key: 0123456789abcdefXYZ", "0123456789abcdefXYZ"),
    ("password k=v", "password=correct-horse-battery", "correct-horse-battery"),
    ("password k: v", "db_password: correct-horse-battery", "correct-horse-battery"),
    ("password json with spaces", '{"password": "correct horse battery"}', "correct horse battery"),
    ("password python repr", "{'passwd': 'correct-horse'}", "correct-horse"),
    ("secret json number", '{"client_secret":123456789}', "123456789"),
    ("token escaped json", '"{\\"token\\": \\"tok-123456789\\"}"', "tok-123456789"),
    ("api_key k=v", "api_key=abcd1234efgh", "abcd1234efgh"),
    ("url password", "postgresql://alice:hunter2pass@db.example.com:5432/app", "hunter2pass"),
    ("url password with @ and /", "postgresql://alice:p@ss/w0rd@db.example.com/app", "p@ss/w0rd"),
    ("redis without user", "redis://:s3cretpw@cache:6379/0", "s3cretpw"),
    ("amqp", "amqp://guest:guestpw123@rabbit:5672/", "guestpw123"),
]


@pytest.mark.parametrize(("family", "text", "secret"), CASES, ids=[c[0] for c in CASES])
def test_every_credential_family_is_masked(family: str, text: str, secret: str) -> None:
    masked, n = mask_secrets(f"before {text} after")
    assert secret not in masked, masked
    assert n >= 1
    assert masked.startswith("before ") and masked.endswith(" after")
    assert mask_secrets(masked) == (masked, 0), "masking is idempotent"
    # the exporter/receiver step catches it wherever it sits in the attributes
    clean, _cut, _n = sanitize_attributes({"app.value": f"x {text} y"}, Sanitizer())
    assert clean is not None and secret not in json.dumps(clean)


@pytest.mark.parametrize(
    "text",
    ["the key point of the talk", "see https://example.com/a@b", "gen_ai.usage.input_tokens=1234",
     "max_tokens=1024", "task-abcdefghijklmnopqrstuvwxyz", "the passage about Asia and IATA", "http://localhost:8000/x"],
)  # fmt: skip
def test_look_alikes_are_left_alone(text: str) -> None:
    assert mask_secrets(text) == (text, 0)


def test_masked_json_stays_valid() -> None:
    data = {"api_key": 12345678, "nested": {"password": 'a b"c', "list": ["sk-" + "x" * 30]}, "ok": True}
    masked, n = mask_secrets(json.dumps(data))
    back = json.loads(masked)
    assert n == 3 and back["ok"] is True and "x" * 30 not in masked and "12345678" not in masked


def test_masking_happens_before_the_byte_cap(traced_small) -> None:
    """A key straddling the cut is masked whole: no prefix of it survives."""
    key = "sk-proj-" + "Q" * 40
    text = "a" * (1024 - 20) + key + " tail"
    with ragtrail.span("cut", input=text):
        pass
    a = traced_small.client().spans_df(name="cut").iloc[0].attributes
    assert "QQQQ" not in a[semconv.INPUT_VALUE]
    assert semconv.INPUT_VALUE in a[semconv.TRUNCATED]


def test_direct_attributes_names_and_events_are_masked(traced_small) -> None:
    with ragtrail.span("login password=hunter2hunter2") as s:
        s.set_attribute("app.note", "password=correct-horse")
        s.set_attribute("app.db_password", "plain-value-123")
        s.set_attribute("app.big", "y" * 5000)  # set directly: capped like content (cap 1 KiB here)
        s.add_event("call sk-proj-" + "E" * 30, {"headers": "Authorization: Bearer abcdefghijklmnop123"})
    df = traced_small.client().spans_df()
    row = df.iloc[0]
    stored = json.dumps(row.attributes) + row["name"]
    assert "hunter2hunter2" not in stored and "correct-horse" not in stored and "plain-value-123" not in stored
    assert row["name"].startswith("login password=***")
    assert len(row.attributes["app.big"].encode()) <= 1024 and "app.big" in row.attributes[semconv.TRUNCATED]
    tr = traced_small.client().trace(row.trace_id)
    ev = json.dumps(tr.root.events)
    assert "E" * 30 not in ev and "abcdefghijklmnop123" not in ev


def test_mask_hook_sees_every_attribute(tmp_path) -> None:
    path = str(tmp_path / "h.db")
    ragtrail.init(project="h", store=path, mask=lambda t: t.replace("Alice", "[name]"))
    try:
        with ragtrail.span("greet Alice") as s:
            s.set_attribute("app.user", "Alice Smith")
        ragtrail.flush()
        row = ragtrail.Client(path).spans_df().iloc[0]
        assert row["name"] == "greet [name]" and row.attributes["app.user"] == "[name] Smith"
    finally:
        ragtrail.shutdown()


def test_mask_value_for_eval_data() -> None:
    data = {"output": "use sk-proj-" + "Z" * 30, "cfg": {"api_key": "abc12345", "top_k": 5}, "n": 3, "t": ("p=1",)}
    out = mask_value(data, Sanitizer())
    assert "Z" * 30 not in json.dumps(out) and out["cfg"] == {"api_key": "***", "top_k": 5} and out["n"] == 3


def test_eval_outputs_errors_reasons_and_configs_are_stored_masked(tmp_path) -> None:
    from ragtrail.evals import Dataset, Evaluation
    from ragtrail.evals._types import Score

    leak = "sk-proj-" + "L" * 30
    store = str(tmp_path / "e.db")
    ds = Dataset.from_records([{"id": "1", "input": f"q {leak}", "reference": "a"},
                               {"id": "2", "input": "boom", "reference": "a"}], name="m")  # fmt: skip

    def pipeline(q: str) -> str:
        if q == "boom":
            raise RuntimeError(f"could not reach postgresql://u:Pw0rd123@db/x with {leak}")
        return f"answer {leak}"

    def leaky(output: object) -> Score:
        return Score(1.0, reason=f"saw {leak}", details={"token": "tok-abcdefgh"})

    ev = Evaluation("masked", dataset=ds, pipeline=pipeline, scorers=[leaky], store=store)
    ev.run(config={"api_key": "cfg-secret-999", "k": 1})
    ragtrail.shutdown()
    import sqlite3

    con = sqlite3.connect(store)
    dump = "\n".join(str(r) for t in ("run_examples", "run_results", "runs", "dataset_examples")
                     for r in con.execute(f"SELECT * FROM {t}"))  # noqa: S608 - fixed names  # fmt: skip
    assert "L" * 30 not in dump and "Pw0rd123" not in dump and "cfg-secret-999" not in dump
    assert "tok-abcdefgh" not in dump
    assert "sk-***" in dump


@pytest.fixture
def traced_small(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "t.db")
    ragtrail.init(project="t", store=path, max_attribute_bytes=1024, schedule_delay_ms=50)

    class _T:
        def client(self) -> ragtrail.Client:
            ragtrail.flush()
            return ragtrail.Client(path)

    try:
        yield _T()
    finally:
        ragtrail.shutdown()
