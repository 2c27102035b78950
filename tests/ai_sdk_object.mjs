// generateObject and streamObject through relay, over the Responses API (the AI SDK's default)
// and Chat Completions; prints one JSON line per call.
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, streamObject } from "ai";
import { z } from "zod";

const [baseURL, apiKey, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const schema = z.object({ name: z.string(), population: z.number().int(), tags: z.array(z.string()) });
const out = {};
out.responses = (await generateObject({ model: openai(model), schema, prompt: "A city" })).object;
out.chat = (await generateObject({ model: openai.chat(model), schema, prompt: "A city" })).object;
const streamed = streamObject({ model: openai(model), schema, prompt: "A city" });
for await (const _ of streamed.partialObjectStream) { /* partial objects arrive */ }
out.stream = await streamed.object;
console.log(JSON.stringify(out));
