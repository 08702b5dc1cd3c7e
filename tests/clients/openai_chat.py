#!/usr/bin/env python3
"""Streams chat completions from a running `sramlm serve` with the official
`openai` Python client, one thread per user message, all started together.

Usage: openai_chat.py BASE_URL MAX_TOKENS MESSAGE...
Prints a JSON list, one entry per message: the streamed text, the finish
reason and the number of content chunks. tests/serve.rs runs it and compares
each text with the message's solo greedy run.
"""
import json
import sys
import threading

from openai import OpenAI


def main() -> None:
    base_url, max_tokens, messages = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    start = threading.Barrier(len(messages))
    results = [None] * len(messages)

    def user(i: int) -> None:
        start.wait()
        text, finish, chunks = [], None, 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": messages[i]}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
        )
        for chunk in stream:
            if not chunk.choices:
                continue
            c = chunk.choices[0]
            if c.delta.content:
                text.append(c.delta.content)
                chunks += 1
            if c.finish_reason:
                finish = c.finish_reason
        results[i] = {"text": "".join(text), "finish_reason": finish, "chunks": chunks}

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(messages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if any(r is None for r in results):
        sys.exit("a client thread failed")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
