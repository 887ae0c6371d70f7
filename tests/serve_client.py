"""`tandem serve` as the official `openai` client sees it (tests/serve.rs runs this).

Usage: serve_client.py BASE_URL TOKEN QUESTIONS_JSON CONCURRENT

Lists the models, tries a wrong token, asks every question once without and once with
streaming, then CONCURRENT requests at once (half of them streamed), and prints one JSON object:
every answer with who answered (the body's `tandem` field and the `x-tandem-answered-by`
header), the status of the wrong-token attempt, and the server's /metrics text.
"""

import asyncio
import json
import sys
import urllib.request

import openai


def body_fields(obj):
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get("tandem") or {}


def plain_record(raw, question):
    """What a non-streamed answer says: its text, who answered (body and header), the route."""
    completion = raw.parse()
    tandem = body_fields(completion)
    return {
        "id": completion.id,
        "question": question,
        "stream": False,
        "content": completion.choices[0].message.content,
        "answered_by": tandem.get("answered_by"),
        "header": raw.headers.get("x-tandem-answered-by"),
        "capped": tandem.get("capped"),
        "route": tandem.get("route"),
    }


def plain(client, question):
    raw = client.chat.completions.with_raw_response.create(
        model="device", messages=[{"role": "user", "content": question}]
    )
    return plain_record(raw, question)


class StreamedAnswer:
    """What a streamed answer says, chunk by chunk: its text, who answered, how it finished."""

    def __init__(self, question, header):
        self.question, self.header = question, header
        self.parts, self.tandem, self.ident, self.finish, self.usage = [], {}, None, None, None

    def add(self, chunk):
        self.ident = chunk.id
        self.tandem = body_fields(chunk) or self.tandem
        if chunk.usage is not None:
            self.usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                self.parts.append(choice.delta.content)
            self.finish = choice.finish_reason or self.finish

    def record(self):
        return {
            "id": self.ident,
            "question": self.question,
            "stream": True,
            "content": "".join(self.parts),
            "answered_by": self.tandem.get("answered_by"),
            "header": self.header,
            "capped": self.tandem.get("capped"),
            "route": self.tandem.get("route"),
            "finish_reason": self.finish,
            "completion_tokens": self.usage,
        }


def streamed(client, question):
    with client.chat.completions.with_streaming_response.create(
        model="device",
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        answer = StreamedAnswer(question, response.headers.get("x-tandem-answered-by"))
        for chunk in response.parse():
            answer.add(chunk)
    return answer.record()


async def burst(base_url, token, questions, n):
    client = openai.AsyncOpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=600)

    async def one(i):
        question = questions[i % len(questions)]
        if i % 2 == 0:
            raw = await client.chat.completions.with_raw_response.create(
                model="device", messages=[{"role": "user", "content": question}]
            )
            return plain_record(raw, question)
        async with client.chat.completions.with_streaming_response.create(
            model="device", messages=[{"role": "user", "content": question}], stream=True
        ) as response:
            answer = StreamedAnswer(question, response.headers.get("x-tandem-answered-by"))
            async for chunk in await response.parse():
                answer.add(chunk)
        return answer.record()

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


def main():
    base_url, token, questions, n = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=600)
    models = [m.id for m in client.models.list()]
    wrong = openai.OpenAI(base_url=base_url, api_key=token + "-wrong", max_retries=0)
    try:
        wrong.chat.completions.create(model="device", messages=[{"role": "user", "content": "hi"}])
        wrong_status = 200
    except openai.AuthenticationError as e:
        wrong_status = e.status_code
    sequential = [plain(client, q) for q in questions] + [streamed(client, q) for q in questions]
    concurrent = asyncio.run(burst(base_url, token, questions, n))
    metrics_url = base_url.rsplit("/v1", 1)[0] + "/metrics"
    metrics = urllib.request.urlopen(metrics_url).read().decode()
    print(json.dumps({
        "openai_version": openai.__version__,
        "models": models,
        "wrong_token_status": wrong_status,
        "sequential": sequential,
        "concurrent": concurrent,
        "metrics": metrics,
    }))


if __name__ == "__main__":
    main()
