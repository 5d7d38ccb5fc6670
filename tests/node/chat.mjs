// useChat's default transport (`DefaultChatTransport` of the real `ai` package) against
// AIIM's chat endpoints, read with readUIMessageStream as useChat does.
// Usage: node chat.mjs send <api> <token> <conversation id> <ui message id> <text>
//        node chat.mjs regenerate <api> <token> <conversation id>
//        node chat.mjs reconnect <api> <token> <conversation id>
// Prints "delta" at the first text delta (the test acts mid-reply then), and last one JSON
// line: {message, chunks, errors} (message null when reconnect got 204).
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const [mode, api, token, chatId, uiId, text] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api, headers: { Authorization: `Bearer ${token}` } });
let stream;
if (mode === 'send') {
  const messages = [{ id: uiId, role: 'user', parts: [{ type: 'text', text }] }];
  stream = await transport.sendMessages({ chatId, messages, trigger: 'submit-message', messageId: undefined, abortSignal: undefined });
} else if (mode === 'regenerate') {
  stream = await transport.sendMessages({ chatId, messages: [], trigger: 'regenerate-message', messageId: undefined, abortSignal: undefined });
} else {
  stream = await transport.reconnectToStream({ chatId });
}
if (stream === null) {
  console.log(JSON.stringify({ message: null, chunks: [], errors: [] }));
  process.exit(0);
}
const chunks = [];
let announced = false;
const seen = stream.pipeThrough(new TransformStream({
  transform(chunk, controller) {
    chunks.push(chunk.type);
    if (chunk.type === 'text-delta' && !announced) {
      announced = true;
      console.log('delta');
    }
    controller.enqueue(chunk);
  },
}));
let message = null;
const errors = [];
for await (const m of readUIMessageStream({ stream: seen, onError: (e) => errors.push(String(e.message)) })) {
  message = m;
}
console.log(JSON.stringify({ message, chunks, errors }));
