/**
 * A tiny HTTP client for tests that, unlike fetch, lets a test set the Host header (the
 * Live Migration API picks the Cassandra instance from it).
 */
import http from "node:http";

export interface HttpResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
  readonly text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  readonly json: any;
}

export interface HttpRequest {
  readonly method?: string;
  /** "127.0.0.1" */
  readonly address: string;
  readonly port: number;
  /** Path and query, sent as is (no normalisation). */
  readonly path: string;
  /** Host header; default `${address}:${port}`. */
  readonly host?: string;
  readonly headers?: Record<string, string>;
  readonly body?: string | Buffer | object;
}

export function httpRequest(req: HttpRequest): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const body =
      req.body === undefined ? undefined : typeof req.body === "string" || Buffer.isBuffer(req.body) ? req.body : JSON.stringify(req.body);
    const r = http.request(
      {
        host: req.address,
        port: req.port,
        method: req.method ?? "GET",
        path: req.path,
        agent: false,
        headers: {
          host: req.host ?? `${req.address}:${req.port}`,
          ...(body !== undefined ? { "content-type": "application/json", "content-length": Buffer.byteLength(body) } : {}),
          ...req.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const buf = Buffer.concat(chunks);
          const text = buf.toString("utf8");
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, text, json });
        });
      },
    );
    r.on("error", reject);
    if (body !== undefined) r.write(body);
    r.end();
  });
}
