// The official `openai` JS SDK against the gateway: the cases of tests/compat/test_openai_js.py.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

import { apiKey, baseURL, models, runCases } from "./harness.mjs";

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const ask = (content) => [{ role: "user", content }];
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: {
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    },
  },
};

async function streamText(params) {
  const expected = await client.chat.completions.create({ model: models.chat, messages: params.messages });
  const stream = await client.chat.completions.create({ model: models.chat, stream: true, ...params });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return { expected: expected.choices[0].message.content, chunks };
}

// What the SDK makes of a default (base64) embeddings request, and what was on the wire.
async function embedDefault(model, input) {
  const wire = await (await client.embeddings.create({ model, input }).asResponse()).json();
  const embeddings = await client.embeddings.create({ model, input });
  return {
    wire_types: wire.data.map((e) => typeof e.embedding),
    embeddings: embeddings.data.map((e) => Array.from(e.embedding)),
    prompt_tokens: embeddings.usage.prompt_tokens,
  };
}

const errors = {
  AuthenticationError: OpenAI.AuthenticationError,
  NotFoundError: OpenAI.NotFoundError,
  BadRequestError: OpenAI.BadRequestError,
  UnprocessableEntityError: OpenAI.UnprocessableEntityError,
  APIError: OpenAI.APIError,
};

await runCases(
  {
    async chat() {
      const completion = await client.chat.completions.create({ model: models.chat, messages: ask("Hello there") });
      return {
        content: completion.choices[0].message.content,
        finish_reason: completion.choices[0].finish_reason,
        completion_tokens: completion.usage?.completion_tokens ?? null,
        request_id: completion._request_id ?? null,
      };
    },
    async stream_plain_loop() {
      const expected = await client.chat.completions.create({ model: models.chat, messages: ask("Stream it") });
      const stream = await client.chat.completions.create({ model: models.chat, messages: ask("Stream it"), stream: true });
      let text = "";
      for await (const chunk of stream) {
        text += chunk.choices[0].delta.content ?? ""; // the README's loop, unguarded
      }
      return { text, expected: expected.choices[0].message.content };
    },
    async stream_with_usage() {
      const { expected, chunks } = await streamText({
        messages: ask("Count me in"),
        stream_options: { include_usage: true },
      });
      const last = chunks.at(-1);
      const text = chunks.slice(0, -1).map((c) => c.choices[0].delta.content ?? "").join("");
      return { text, expected, last_choices: last.choices, last_usage: last.usage ?? null };
    },
    async responses() {
      const response = await client.responses.create({ model: models.chat, input: "Say hello" });
      return { status: response.status, output_text: response.output_text, usage: response.usage ?? null };
    },
    async responses_stream() {
      const expected = await client.responses.create({ model: models.chat, input: "Stream a response" });
      const stream = await client.responses.create({ model: models.chat, input: "Stream a response", stream: true });
      let text = "";
      let completed = null;
      for await (const event of stream) {
        if (event.type === "response.output_text.delta") text += event.delta;
        // The wire's response object has no output_text (an SDK convenience): read its items.
        if (event.type === "response.completed") {
          completed = event.response.output
            .filter((item) => item.type === "message")
            .flatMap((item) => item.content)
            .filter((part) => part.type === "output_text")
            .map((part) => part.text)
            .join("");
        }
      }
      return { text, completed, expected: expected.output_text };
    },
    async structured_output() {
      const Answer = z.object({ city: z.string(), temperature: z.number().int(), sunny: z.boolean() });
      const completion = await client.chat.completions.parse({
        model: models.chat,
        messages: ask("Weather report, as data"),
        response_format: zodResponseFormat(Answer, "answer"),
      });
      return { parsed: completion.choices[0].message.parsed };
    },
    async tools() {
      const completion = await client.chat.completions.create({
        model: models.chat,
        messages: ask("What is the weather in Paris?"),
        tools: [weatherTool],
      });
      const choice = completion.choices[0];
      const call = choice.message.tool_calls?.[0];
      return {
        finish_reason: choice.finish_reason,
        name: call?.function?.name ?? null,
        arguments: call ? JSON.parse(call.function.arguments) : null,
      };
    },
    async tools_stream() {
      const stream = await client.chat.completions.create({
        model: models.chat,
        messages: ask("What is the weather in Paris?"),
        tools: [weatherTool],
        stream: true,
        stream_options: { include_usage: true },
      });
      let name = "";
      let args = "";
      let finish = null;
      for await (const chunk of stream) {
        for (const choice of chunk.choices) {
          for (const call of choice.delta.tool_calls ?? []) {
            name += call.function?.name ?? "";
            args += call.function?.arguments ?? "";
          }
          finish = choice.finish_reason ?? finish;
        }
      }
      return { finish_reason: finish, name, arguments: JSON.parse(args) };
    },
    async embeddings_default_format() {
      return embedDefault(models.embedding, ["one", "two"]);
    },
    async embeddings_default_format_from_a_float_provider() {
      const floats = await client.embeddings.create({
        model: models.demo_embedding,
        input: "one",
        encoding_format: "float",
      });
      return { ...(await embedDefault(models.demo_embedding, "one")), expected: floats.data[0].embedding };
    },
    async embeddings_float() {
      const embeddings = await client.embeddings.create({
        model: models.embedding,
        input: "one",
        encoding_format: "float",
      });
      return { embeddings: embeddings.data.map((e) => e.embedding) };
    },
    async models_retrieve() {
      const model = await client.models.retrieve(models.chat);
      return { id: model.id, object: model.object };
    },
    async bad_key() {
      const bad = new OpenAI({ baseURL, apiKey: "sk-forge-wrong", maxRetries: 0 });
      await bad.chat.completions.create({ model: models.chat, messages: ask("Hi") });
      return { raised: false };
    },
    async unknown_model() {
      await client.chat.completions.create({ model: models.unknown, messages: ask("Hi") });
      return { raised: false };
    },
    async invalid_body() {
      await client.chat.completions.create({ model: models.chat, messages: ask("Hi"), max_tokens: -1 });
      return { raised: false };
    },
  },
  errors,
);
