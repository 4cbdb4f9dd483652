/**
 * What counting costs on the hot path: one message counted by type with its
 * bytes, and one latency observed, against a plain field increment (the
 * baseline). Each iteration counts 1,000 events, so the per-event cost is the
 * average divided by 1,000.
 */
import { MessageType } from "../src/protocol/messages.ts";
import { ServerMetrics } from "../src/server/server_metrics.ts";

const metrics = new ServerMetrics({
  connections: () => 0,
  sessions: () => 0,
  realms: () => 0,
});
const plain = { messages: 0, bytes: 0 };
const types = [MessageType.Upload, MessageType.Mark, MessageType.Ping];
export let sink = 0;

Deno.bench({
  name: "plain field increments",
  group: "count-1000-messages",
  baseline: true,
  fn() {
    for (let index = 0; index < 1000; index++) {
      plain.messages++;
      plain.bytes += index;
    }
    sink += plain.messages;
  },
});

Deno.bench({
  name: "ServerMetrics.received(type, bytes)",
  group: "count-1000-messages",
  fn() {
    for (let index = 0; index < 1000; index++) {
      metrics.received(types[index % 3]!, index);
    }
    sink += metrics.bytesReceived.value;
  },
});

Deno.bench({
  name: "HistogramChild.observe(seconds)",
  group: "count-1000-messages",
  fn() {
    for (let index = 0; index < 1000; index++) {
      metrics.uploadAck.observe((index % 100) / 1000);
    }
    sink += metrics.uploadAck.count;
  },
});

Deno.bench({
  name: "ServerMetrics.render()",
  group: "scrape",
  baseline: true,
  fn() {
    sink += metrics.render().length;
  },
});
