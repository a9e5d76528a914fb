// Drives kvtrim serve's tool calling and structured output with the
// official OpenAI client library: a required call and the round trip's
// second turn, a streamed call gathered from its deltas, and a
// response_format json_schema answer. Prints one JSON object per request
// to stdout. Usage: NODE_PATH=DIR/node_modules node openai-tools.cjs BASE_URL
const OpenAI = require("openai");

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 8 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
    },
  },
}];

async function main() {
  const client = new OpenAI({ baseURL: process.argv[2], apiKey: "kvtrim-test", maxRetries: 0 });
  const out = (o) => console.log(JSON.stringify(o));
  const messages = [{ role: "user", content: "What is the weather in Paris?" }];

  const first = await client.chat.completions.create({ model: "kvtrim", messages, tools, tool_choice: "required", max_tokens: 200, temperature: 0 });
  const msg = first.choices[0].message;
  out({ name: "call", finish_reason: first.choices[0].finish_reason, tool_calls: msg.tool_calls });

  const call = msg.tool_calls[0];
  messages.push(msg, { role: "tool", tool_call_id: call.id, content: "sunny, 21 C" });
  const second = await client.chat.completions.create({ model: "kvtrim", messages, tools, max_tokens: 16, temperature: 0 });
  out({ name: "second-turn", finish_reason: second.choices[0].finish_reason, text: second.choices[0].message.content });

  const stream = await client.chat.completions.create({
    model: "kvtrim", messages: messages.slice(0, 1), tools,
    tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 200, temperature: 0, stream: true,
  });
  const calls = [];
  let finish = null;
  for await (const chunk of stream) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      calls[d.index] = calls[d.index] ?? { id: d.id, type: d.type, function: { name: "", arguments: "" } };
      calls[d.index].function.name += d.function?.name ?? "";
      calls[d.index].function.arguments += d.function?.arguments ?? "";
    }
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  out({ name: "call-stream", finish_reason: finish, tool_calls: calls });

  const person = await client.chat.completions.create({
    model: "kvtrim", messages: [{ role: "user", content: "Who is Lily?" }], max_tokens: 300, temperature: 0,
    response_format: { type: "json_schema", json_schema: { name: "person", schema: {
      type: "object", properties: { name: { type: "string", minLength: 1, maxLength: 12 }, age: { type: "integer", minimum: 0, maximum: 150 } },
      required: ["name", "age"], additionalProperties: false } } },
  });
  out({ name: "json-schema", finish_reason: person.choices[0].finish_reason, text: person.choices[0].message.content });
}

main().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
