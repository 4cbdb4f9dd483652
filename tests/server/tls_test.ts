import assert from "node:assert/strict";
import { startTestServer } from "../_helpers/test_server.ts";

/** Whether openssl can make a certificate here; the test is skipped if not. */
async function hasOpenssl(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

async function openssl(args: string[]): Promise<void> {
  const result = await new Deno.Command("openssl", {
    args,
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(result.success, new TextDecoder().decode(result.stderr));
}

Deno.test({
  name: "serveSync() with cert and key serves HTTPS and WSS",
  ignore: !await hasOpenssl(),
  async fn() {
    const directory = await Deno.makeTempDir();
    try {
      // A throwaway CA and a leaf certificate for 127.0.0.1 signed by it
      // (TLS clients refuse a CA certificate used as the server's own).
      const caPath = `${directory}/ca.pem`;
      const certPath = `${directory}/cert.pem`;
      const keyPath = `${directory}/key.pem`;
      const curve = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
      ];
      await openssl([
        "req",
        "-x509",
        ...curve,
        "-keyout",
        `${directory}/ca-key.pem`,
        "-out",
        caPath,
        "-days",
        "1",
        "-subj",
        "/CN=Tether test CA",
      ]);
      await openssl([
        "req",
        ...curve,
        "-keyout",
        keyPath,
        "-out",
        `${directory}/leaf.csr`,
        "-subj",
        "/CN=127.0.0.1",
      ]);
      await Deno.writeTextFile(
        `${directory}/leaf.ext`,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
      );
      await openssl([
        "x509",
        "-req",
        "-in",
        `${directory}/leaf.csr`,
        "-CA",
        caPath,
        "-CAkey",
        `${directory}/ca-key.pem`,
        "-CAcreateserial",
        "-out",
        certPath,
        "-days",
        "1",
        "-extfile",
        `${directory}/leaf.ext`,
      ]);
      const cert = await Deno.readTextFile(certPath);
      const key = await Deno.readTextFile(keyPath);
      await using test = await startTestServer({ cert, key });
      assert.match(test.url, /^https:\/\/127\.0\.0\.1:\d+$/);

      const ca = await Deno.readTextFile(caPath);
      using client = Deno.createHttpClient({ caCerts: [ca] });
      const health = await fetch(`${test.url}/health`, { client });
      assert.deepEqual(await health.json(), { status: "ok" });
      const login = await (await fetch(`${test.url}/login`, {
        client,
        method: "POST",
        body: JSON.stringify({ provider: "anonymous" }),
      })).json();

      // WebSocket has no per-connection CA option: trust the certificate in
      // a child process and speak the handshake from there.
      const code = `
        import { encodeMessage } from ${
        JSON.stringify(
          new URL("../../src/protocol/encode.ts", import.meta.url).href,
        )
      };
        import { decodeMessage } from ${
        JSON.stringify(
          new URL("../../src/protocol/decode.ts", import.meta.url).href,
        )
      };
        const socket = new WebSocket(${
        JSON.stringify(test.url.replace("https", "wss") + "/sync")
      });
        socket.binaryType = "arraybuffer";
        const timer = setTimeout(() => { console.log("timeout"); Deno.exit(2); }, 5000);
        socket.onopen = () => socket.send(encodeMessage({ type: 0x01, minVersion: 1, maxVersion: 1, accessToken: ${
        JSON.stringify(login.accessToken)
      } }));
        socket.onmessage = (event) => {
          console.log(JSON.stringify(decodeMessage(new Uint8Array(event.data))));
          clearTimeout(timer);
          socket.close();
        };
      `;
      const child = await new Deno.Command(Deno.execPath(), {
        args: ["eval", "--cert", caPath, code],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(child.code, 0, new TextDecoder().decode(child.stderr));
      const reply = JSON.parse(new TextDecoder().decode(child.stdout).trim());
      assert.equal(reply.type, 0x41);
      assert.equal(reply.userId, login.userId);
    } finally {
      await Deno.remove(directory, { recursive: true });
    }
  },
});
