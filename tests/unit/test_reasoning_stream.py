"""The endpoint client's reasoning/answer split of a stream: reasoning deltas, DeepSeek's
</think>, harmony's final channel, by server token ids or re-tokenized text."""

import json

from cores.openai.client import EndpointClient, _Stream


def sse(**choice):
    return b"data: " + json.dumps({"choices": [{"index": 0, **choice}]}).encode()


def split(lines, tokenizer_path=""):
    client = EndpointClient("http://127.0.0.1:1", "chat", "m", 5.0, 1, tokenizer_path)
    s = _Stream()
    for line in lines:
        s.feed(line)
    s.feed(b"data: [DONE]")
    ids, _ = client._final_ids(s)
    return len(ids), client._split(s, len(ids)), s


def test_reasoning_deltas_with_server_ids_are_split_by_chunk():
    n, (r, a, first), s = split([
        sse(delta={"role": "assistant", "content": ""}),  # a role-only delta: no output
        sse(delta={"reasoning_content": "Let me"}, token_ids=[5, 6]),
        sse(delta={"reasoning_content": " think."}, token_ids=[7]),
        sse(delta={"content": "B"}, token_ids=[8]),
        sse(delta={"content": "."}, token_ids=[9, 10]),
    ])  # fmt: skip
    assert (n, r, a) == (6, 3, 3)  # every token reaches LoadGen, reasoning included
    assert first == s.times[2] and first > s.times[0]  # the first answer chunk's time


def test_think_marker_in_completions_text():
    n, (r, a, _), _ = split([
        sse(text="Hmm, 2+2", token_ids=[1, 2, 3]),
        sse(text=" is 4.</th", token_ids=[4, 5]),
        sse(text="ink>", token_ids=[6]),  # the marker spans chunks
        sse(text="The answer is 4.", token_ids=[7, 8]),
    ])  # fmt: skip
    assert (n, r, a) == (8, 6, 2)
    # split by chunk: a chunk that completes the marker is reasoning, all of it
    n, (r, a, _), _ = split([sse(text="Hmm</think>", token_ids=[1, 2]),
                             sse(text="4", token_ids=[3])])  # fmt: skip
    assert (r, a) == (2, 1)


def test_harmony_final_channel_retokenized(tiny_tokenizer):
    from llmlib.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_tokenizer)
    draft = "<|channel|>analysis<|message|>try A<|end|><|start|>assistant"
    final = "<|channel|>final<|message|>B<|return|>"
    n, (r, a, _), _ = split([sse(text=draft), sse(text=final[:20]), sse(text=final[20:])],
                            tiny_tokenizer)  # fmt: skip
    want_r = len(tok.encode(draft + final[:20] + final[20:], add_bos=False))
    assert n == want_r and (r, a) == (n, 0)  # the marker ends in the last chunk
    n, (r, a, _), _ = split([sse(text=draft + final[:27]), sse(text=final[27:])], tiny_tokenizer)
    assert r == len(tok.encode(draft + final[:27], add_bos=False)) and r + a == n and a > 0


def test_no_reasoning_is_all_answer():
    n, (r, a, first), s = split([sse(text="Paris", token_ids=[3]), sse(text=".", token_ids=[4])])
    assert (n, r, a) == (2, 0, 2) and first == s.times[0]
