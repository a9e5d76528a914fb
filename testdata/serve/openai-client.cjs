// Drives kvtrim serve with the official OpenAI client library: chat and
// completions, streamed and not, at temperature 0. Prints one JSON object
// per request ({name, text, finish_reason}) to stdout.
// Usage: NODE_PATH=DIR/node_modules node openai-client.cjs BASE_URL
const OpenAI = require("openai");

async function main() {
  const client = new OpenAI({ baseURL: process.argv[2], apiKey: "kvtrim-test", maxRetries: 0 });
  const messages = [{ role: "user", content: "Tell me a story about a dog." }];
  const out = (name, text, finish) => console.log(JSON.stringify({ name, text, finish_reason: finish }));

  const chat = await client.chat.completions.create({ model: "kvtrim", messages, max_tokens: 24, temperature: 0 });
  out("chat", chat.choices[0].message.content, chat.choices[0].finish_reason);

  let text = "", finish = null;
  const chatStream = await client.chat.completions.create({ model: "kvtrim", messages, max_tokens: 24, temperature: 0, stream: true });
  for await (const chunk of chatStream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  out("chat-stream", text, finish);

  const comp = await client.completions.create({ model: "kvtrim", prompt: "Once upon a time", max_tokens: 24, temperature: 0 });
  out("completion", comp.choices[0].text, comp.choices[0].finish_reason);

  text = "";
  finish = null;
  const compStream = await client.completions.create({ model: "kvtrim", prompt: "Once upon a time", max_tokens: 24, temperature: 0, stream: true });
  for await (const chunk of compStream) {
    text += chunk.choices[0]?.text ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  out("completion-stream", text, finish);
}

main().catch((e) => {
  console.error(String(e));
  process.exit(1);
});
