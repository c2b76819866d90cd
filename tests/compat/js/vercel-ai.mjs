// The Vercel AI SDK's OpenAI provider against the gateway: the cases of
// tests/compat/test_vercel_ai.py. `createOpenAI(...)(model)` is the Responses API
// (POST /v1/responses); `.chat(model)` is chat completions.
import { createOpenAI } from "@ai-sdk/openai";
import { APICallError, embed, generateText, streamText } from "ai";

import { apiKey, baseURL, models, runCases } from "./harness.mjs";

const openai = createOpenAI({ baseURL, apiKey });

async function generate(model, prompt) {
  const result = await generateText({ model, prompt, maxRetries: 0 });
  return {
    text: result.text,
    finish_reason: result.finishReason,
    output_tokens: result.usage.outputTokens ?? null,
  };
}

async function stream(model, prompt) {
  const expected = await generateText({ model, prompt, maxRetries: 0 });
  let failure = null;
  const result = streamText({ model, prompt, maxRetries: 0, onError: ({ error }) => { failure = error; } });
  let text = "";
  for await (const piece of result.textStream) text += piece;
  if (failure) throw failure;
  return {
    text,
    expected: expected.text,
    finish_reason: await result.finishReason,
    output_tokens: (await result.usage).outputTokens ?? null,
  };
}

await runCases(
  {
    generate_text: () => generate(openai(models.chat), "Hello from the AI SDK"),
    stream_text: () => stream(openai(models.chat), "Stream from the AI SDK"),
    generate_text_chat: () => generate(openai.chat(models.chat), "Hello from the AI SDK"),
    stream_text_chat: () => stream(openai.chat(models.chat), "Stream from the AI SDK"),
    async embed() {
      const result = await embed({ model: openai.embedding(models.embedding), value: "one", maxRetries: 0 });
      return { embedding: result.embedding, tokens: result.usage.tokens };
    },
  },
  { APICallError },
);
