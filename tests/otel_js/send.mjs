// Sends one trace through one OTLP exporter of the official OpenTelemetry JS SDK.
// usage: node send.mjs <proto|json|grpc> <endpoint> ; prints the spans it sent as JSON lines.
import { SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

const [transport, endpoint] = process.argv.slice(2);
let exporter;
if (transport === "proto") {
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
  exporter = new OTLPTraceExporter({ url: endpoint });
} else if (transport === "json") {
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
  exporter = new OTLPTraceExporter({ url: endpoint });
} else {
  const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-grpc");
  exporter = new OTLPTraceExporter({ url: endpoint });
}
const sent = [];
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({
    "service.name": `js-${transport}`,
    "service.version": "3.1.4",
    "deployment.environment.name": "ci",
    "app.ports": [80, 443],
  }),
  spanProcessors: [
    new SimpleSpanProcessor(exporter),
    { onStart() {}, onEnd(s) { sent.push(s); }, forceFlush: async () => {}, shutdown: async () => {} },
  ],
});
const tracer = provider.getTracer("js.app", "9.8.7");
const root = tracer.startSpan("GET /answer", { kind: SpanKind.SERVER, attributes: { "http.route": "/answer" } });
const ctx = trace.setSpan(context.active(), root);
const llm = tracer.startSpan(
  "chat gpt-4o-mini",
  {
    kind: SpanKind.CLIENT,
    attributes: {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.usage.input_tokens": 812,
      "gen_ai.usage.output_tokens": 64,
      "floats": [0.5, 1.5],
      "bools": [true, false],
    },
  },
  ctx,
);
llm.addEvent("first_token", { "n": 1 });
llm.setStatus({ code: SpanStatusCode.OK });
llm.end();
const consumer = tracer.startSpan(
  "consume",
  { kind: SpanKind.CONSUMER, links: [{ context: llm.spanContext(), attributes: { "batch.index": 2 } }] },
  ctx,
);
consumer.setStatus({ code: SpanStatusCode.ERROR, message: "queue closed" });
consumer.end();
root.end();
await provider.forceFlush();
await provider.shutdown();
for (const s of sent) {
  const c = s.spanContext();
  console.log(JSON.stringify({
    trace_id: c.traceId, span_id: c.spanId, name: s.name, kind: s.kind,
    start: s.startTime, end: s.endTime,
  }));
}
