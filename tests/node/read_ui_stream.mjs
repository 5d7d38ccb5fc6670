// Reads one AIIM message stream endpoint with the real AI SDK (`ai`): the SDK's own SSE
// parser and chunk schema (parseJsonEventStream + uiMessageChunkSchema), then
// readUIMessageStream, exactly as useChat's transport does. Prints "connected" once the
// response headers are in, then one JSON line: {status, header, message, chunks}.
// Usage: node read_ui_stream.mjs <url> <token>
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';

const [url, token] = process.argv.slice(2);
const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
console.log('connected');
const chunks = [];
const parsed = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema }).pipeThrough(
  new TransformStream({
    transform(result, controller) {
      if (!result.success) throw result.error; // a part the SDK does not accept fails the test
      chunks.push(result.value.type);
      controller.enqueue(result.value);
    },
  }),
);
let message;
const errors = [];
for await (const m of readUIMessageStream({ stream: parsed, onError: (e) => errors.push(String(e.message)) })) {
  message = m;
}
console.log(JSON.stringify({
  status: response.status,
  header: response.headers.get('x-vercel-ai-ui-message-stream'),
  message,
  chunks,
  errors,
}));
