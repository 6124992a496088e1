"""The row sampler both decode loops share (engines/causal/sampling.py) and the JSON automaton behind
constrained decoding (json_grammar.py), on the tiny chat model: penalties and logit_bias as OpenAI documents
them, the same in generate and generate_batch; JSON mode and schemas whose output always parses (and matches);
forced tool calls; strings the output must not contain."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inhouse.engines.causal.data import calls_from_text
from inhouse.engines.causal.generation import CausalEngine, Generated, SamplingParams
from inhouse.engines.causal.json_grammar import Grammar
from inhouse.engines.causal.json_schema import (
    EncodedNode,
    LiteralNode,
    ObjectNode,
    SchemaError,
    compile_schema,
    literal,
)
from inhouse.engines.causal.sampling import Constraint, RowSampler

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "pet"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "blue"]}},
                         "pet": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/pet"}]}},
          "$defs": {"pet": {"type": "object", "additionalProperties": False, "required": ["kind", "legs"],
                            "properties": {"kind": {"type": "string"}, "legs": {"type": ["number", "null"]}}}}}


def greedy(tokens: int, **extra: Any) -> SamplingParams:
    return SamplingParams(tokens, 0.0, 1.0, (), None, **extra)


@pytest.fixture(scope="module")
def plain(tiny_llm: Path) -> Iterator[CausalEngine]:
    """The saved tiny model: it answers newlines to every prompt (a repeated token to penalise)."""
    e = CausalEngine(tiny_llm, 1)
    yield e
    e.close()


def ask(engine: CausalEngine, words: str = "give me json") -> list[int]:
    return engine.chat_prompt([{"role": "user", "content": words}])


def token(engine: CausalEngine, text: str) -> int:
    [t] = engine.tok(text, add_special_tokens=False)["input_ids"]
    return int(t)


def tokens_of(engine: CausalEngine, g: Generated) -> list[int]:
    return list(engine.tok(g.text, add_special_tokens=False)["input_ids"])


# -- the JSON automaton -----------------------------------------------------------------------------------------
def first_rejected(grammar: Grammar, text: str) -> int | bool:
    """The byte index the grammar rejects, or (all accepted) whether the text is whole."""
    data, state = text.encode(), grammar.start
    for i in range(len(data)):
        nxt = grammar.step(state, data[i : i + 1])
        if nxt is None:
            return i
        state = nxt
    return grammar.complete(state)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 3 or pick < 0.4:
        return rng.choice([0, -1, 12.5, -3e-7, 1e22, "", "a\"\\/\n\t\u00e9\u2603\U0001f600", True, False, None])
    if pick < 0.7:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{rng.randint(0, 99)}\u00fc": random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def test_every_json_object_is_accepted_byte_by_byte_and_only_when_whole() -> None:
    grammar, rng = Grammar(), random.Random(0)
    for _ in range(200):
        value = {"v": random_value(rng)}
        for text in (json.dumps(value), json.dumps(value, indent=2), json.dumps(value, ensure_ascii=False)):
            assert first_rejected(grammar, text) is True, text
            assert first_rejected(grammar, text[:-1]) is False  # a prefix is valid, not whole
    for bad, at in [("[]", 0), (" {}", 0), ('{"a" 1}', 5), ('{"a":01}', 6), ('{"a":1,}', 7), ("{,}", 1),
                    ('{"a":tru}', 8), ('{"a":1}}', 7), ('{"a":"\x01"}', 6), ('{"a":1.}', 7), ('{"a":-}', 6)]:
        assert first_rejected(grammar, bad) == at, bad
    inside = grammar.step(grammar.start, b'{"a":"')
    assert inside is not None
    for invalid_utf8 in (b"\xed\xa0\x80", b"\xe0\x80\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xff"):
        assert grammar.step(inside, invalid_utf8) is None  # surrogates, overlong forms, past U+10FFFF
    assert grammar.step(inside, "\U0001f600\u20ac".encode()) is not None
    nested = '{"a":' + "[" * 30 + "]" * 30 + "}"
    assert first_rejected(grammar, nested) is True
    assert isinstance(first_rejected(grammar, '{"a":' + "[" * 100), int)  # nesting is bounded


def test_a_schema_grammar_accepts_what_matches_and_nothing_else() -> None:
    grammar = Grammar(compile_schema(PERSON))
    good = [{"name": "Bo", "age": 3, "tags": ["red"], "pet": None},
            {"pet": {"kind": "cat", "legs": 4.5}, "tags": [], "age": -10, "name": "\u00e9"},
            {"name": "x", "age": 0, "tags": ["blue", "red"], "pet": {"legs": None, "kind": ""}}]
    for value in good:
        assert first_rejected(grammar, json.dumps(value)) is True
        jsonschema.validate(value, PERSON)
    bad = ['{"name": "Bo"}', '{"name": "Bo", "age": 3.5', '{"name":"b","age":1,"tags":["green"]',
           '{"nam":1}', '{"name":"a","name":"b"}', '{"name":"a","age":1,"tags":[],"pet":{"kind":"c"}}',
           '{"name":"a","age":1,"tags":[],"pet":null,"extra":1}']
    for text in bad:
        assert first_rejected(grammar, text) is not True, text


@pytest.mark.parametrize(("schema", "says"), [
    ({"type": "string"}, "root of the schema must be an object"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}, "'pattern'"),
    ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0}}}, "'minimum'"),
    ({"type": "object", "properties": {"a": {"oneOf": [{"type": "string"}]}}}, "'oneOf'"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$defs entry"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/a"}}},
     "refers only to itself"),
    ({"type": "object", "properties": {}, "required": ["a"]}, "not in its properties"),
    ({"type": "object", "properties": {"a": {}}}, "needs a type"),
    ({"type": "object", "properties": {"a": {"type": "decimal"}}}, "not a JSON schema type"),
])
def test_schemas_it_cannot_enforce_are_refused(schema: dict[str, Any], says: str) -> None:
    with pytest.raises(SchemaError, match=None) as exc:
        compile_schema(schema)
    assert says in str(exc.value)


def test_deep_schemas_are_refused_not_crashing() -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(SchemaError, match="nests deeper"):
        compile_schema(schema)


# -- penalties and logit_bias -----------------------------------------------------------------------------------
def test_penalties_and_bias_follow_openais_formula(engine: CausalEngine) -> None:
    import torch

    params = greedy(5, frequency_penalty=0.5, presence_penalty=1.5, logit_bias=((3, 7.0), (9, -100.0)))
    sampler = RowSampler(params, engine.vocab_size, None)
    for t in (4, 4, 4, 5, 9):
        sampler.accept(t)
    logits = torch.randn(engine.vocab_size)
    expected = logits.clone()
    expected[4] -= 3 * 0.5 + 1.5
    expected[5] -= 1 * 0.5 + 1.5
    expected[9] -= 1 * 0.5 + 1.5 + 100
    expected[3] += 7.0
    assert torch.allclose(sampler.adjust(logits), expected)
    assert sampler.plain is False and RowSampler(greedy(5), engine.vocab_size, None).plain


def test_a_frequency_penalty_stops_a_repeated_token(plain: CausalEngine) -> None:
    ids = ask(plain)
    free = plain.generate(ids, greedy(12), 1, None)[0]
    repeated = tokens_of(plain, free)
    assert len(set(repeated)) == 1  # the tiny model says one token over and over
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        out = plain.generate(ids, greedy(12, **penalty), 1, None)[0]
        assert tokens_of(plain, out).count(repeated[0]) < len(repeated) / 2, penalty
    negative = plain.generate(ids, greedy(12, frequency_penalty=-2.0), 1, None)[0]
    assert negative == free  # a negative penalty only makes the repetition likelier


def test_logit_bias_forces_or_bans_a_token_even_when_greedy(plain: CausalEngine) -> None:
    ids = ask(plain)
    cat, newline = token(plain, " cat"), token(plain, "\n")
    forced = plain.generate(ids, greedy(6, logit_bias=((cat, 100.0),)), 1, None)[0]
    assert forced.text == " cat" * 6
    banned = plain.generate(ids, greedy(6, logit_bias=((newline, -100.0),)), 1, None)[0]
    assert newline not in tokens_of(plain, banned) and banned.tokens == 6


def test_penalised_rows_in_the_batch_are_what_generate_makes_alone(engine: CausalEngine) -> None:
    ids = [ask(engine, w) for w in ("hello", "the moon and the sun", "cat dog")]
    extra = {"frequency_penalty": 1.2, "presence_penalty": -0.7, "logit_bias": ((token(engine, " cat"), 3.0),)}
    rows = [(ids[0], greedy(12, **extra)), (ids[1], replace(greedy(12, **extra), temperature=1.3, seed=5)),
            (ids[2], replace(greedy(10), temperature=0.9, top_p=0.9, seed=11, frequency_penalty=2.0))]
    batch = engine.generate_batch(rows, None)
    assert batch == [engine.generate_exact(i, p) for i, p in rows]  # Hugging Face generate, through its hooks
    assert engine.generate_batch(rows, None) == batch  # seeded: reproducible
    unpenalised = engine.generate_batch([(i, replace(p, frequency_penalty=0.0, presence_penalty=0.0,
                                                      logit_bias=())) for i, p in rows], None)
    assert unpenalised != batch


# -- constrained decoding ---------------------------------------------------------------------------------------
JSON_MODE = Constraint(Grammar())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_json_mode_output_parses(engine: CausalEngine, seed: int, temperature: float) -> None:
    params = SamplingParams(80, temperature, 0.95, (), seed, constraint=JSON_MODE)
    ids = ask(engine)
    [out] = engine.generate(ids, params, 1, None)
    assert engine.generate_exact(ids, params) == out  # the same seam in the batch loop and in generate
    if out.finish_reason == "stop":
        assert isinstance(json.loads(out.text), dict)
    else:  # cut by max_tokens, as OpenAI cuts it: a prefix of a JSON object
        assert out.finish_reason == "length" and first_rejected(Grammar(), out.text) is False


def test_json_mode_ends_at_the_closing_brace(engine: CausalEngine) -> None:
    finished = []
    for seed in range(6):
        params = SamplingParams(120, 1.0, 1.0, (), seed, constraint=JSON_MODE)
        out = engine.generate(ask(engine, f"json please {seed}"), params, 1, None)[0]
        if out.finish_reason == "stop":
            finished.append(out)
            assert out.text.endswith("}") and isinstance(json.loads(out.text), dict)
    assert finished  # some answers close within the budget (the rest are cut, as checked above)


def test_without_the_constraint_the_same_output_is_no_json(engine: CausalEngine) -> None:
    """The tests above would pass for any model that writes JSON anyway; this one does not."""
    for seed in range(3):
        params = SamplingParams(80, 0.7, 0.95, (), seed)
        text = engine.generate(ask(engine), params, 1, None)[0].text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_schema_output_parses_and_matches(engine: CausalEngine, seed: int) -> None:
    params = SamplingParams(400, 0.0 if seed == 0 else 0.8, 1.0, (), seed,
                            constraint=Constraint(Grammar(compile_schema(PERSON))))
    ids = ask(engine, "a person as json")
    [out] = engine.generate_batch([(ids, params)], None)
    assert engine.generate_exact(ids, params) == out
    if out.finish_reason == "stop":
        jsonschema.validate(json.loads(out.text), PERSON)
    else:
        assert first_rejected(Grammar(compile_schema(PERSON)), out.text) is False


def test_a_forced_call_is_one_call_block_with_arguments_as_a_json_string(engine: CausalEngine) -> None:
    args = compile_schema({"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]},
                                                            "days": {"type": "integer"}},
                           "required": ["city", "days"], "additionalProperties": False})
    call = ObjectNode({b"name": LiteralNode((literal("weather"),)), b"arguments": EncodedNode(args)},
                      frozenset({b"name", b"arguments"}))
    params = SamplingParams(400, 0.0, 1.0, (), None,  # room for the whitespace this random model likes
                            constraint=Constraint(Grammar(call, b"<tool_call>", b"</tool_call>")))
    out = engine.generate(ask(engine, "weather?"), params, 1, None)[0]
    assert out.finish_reason == "stop", out
    rest, calls = calls_from_text(out.text, {"weather"})
    assert rest == "" and [name for name, _ in calls] == ["weather"]
    arguments = json.loads(calls[0][1])
    assert arguments["city"] in ("Oslo", "Rome") and isinstance(arguments["days"], int)


def test_a_forbidden_string_is_never_written(plain: CausalEngine) -> None:
    ids = ask(plain)
    free = plain.generate(ids, greedy(10), 1, None)[0]
    assert "\n\n" in free.text
    params = greedy(10, constraint=Constraint(forbid=(b"\n\n",)))
    out = plain.generate(ids, params, 1, None)[0]
    assert "\n\n" not in out.text and out.tokens == 10
    assert plain.generate_exact(ids, params) == out


def test_the_token_table_spells_what_the_tokenizer_decodes(engine: CausalEngine) -> None:
    """As the engine decodes an answer (skip_special_tokens): special tokens add nothing, others their bytes."""
    table, rng = engine.token_table(), random.Random(0)
    assert all(table.pieces[i] is None for i in engine.tok.all_special_ids)
    for _ in range(300):
        seq = [rng.randrange(len(engine.tok)) for _ in range(rng.randint(1, 8))]
        spelled = b"".join(table.pieces[i] or b"" for i in seq).decode("utf-8", "replace")
        assert spelled == engine.tok.decode(seq, skip_special_tokens=True)
    assert len(table.pieces) == engine.vocab_size
