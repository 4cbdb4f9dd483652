/**
 * Makes every WebSocket in this process report `bytes` unsent while
 * `backedUp()` is true: the server then sees a socket whose reader has
 * stopped, with no need to fill the kernel's buffers first (how much they
 * take varies by machine). Frames are still delivered, so the test sees
 * what the server chose to send.
 */
export function reportBacklog(
  backedUp: () => boolean,
  bytes: number,
): Disposable {
  const descriptor = Object.getOwnPropertyDescriptor(
    WebSocket.prototype,
    "bufferedAmount",
  )!;
  const real = descriptor.get!;
  Object.defineProperty(WebSocket.prototype, "bufferedAmount", {
    ...descriptor,
    get(this: WebSocket) {
      return backedUp() ? bytes : real.call(this);
    },
  });
  return {
    [Symbol.dispose]() {
      Object.defineProperty(WebSocket.prototype, "bufferedAmount", descriptor);
    },
  };
}
