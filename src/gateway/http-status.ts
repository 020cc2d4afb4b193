/** AgentError code → REST status, and the Java Sidecar's error body. The only such table. */
import type { ServerResponse } from "node:http";
import { STATUS_CODES } from "node:http";
import type { AgentError, ErrorCode } from "../errors.js";

export function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case "InvalidArgument":
    case "FailedPrecondition":
      return 400;
    case "PermissionDenied":
      return 403;
    case "NotFound":
      return 404;
    case "AlreadyExists":
    case "Aborted":
      return 409;
    case "OutOfRange":
      return 416;
    case "Cancelled":
      return 499;
    case "ResourceExhausted":
      return 507;
    case "Unimplemented":
      return 501;
    case "Unavailable":
      return 503;
    case "DeadlineExceeded":
      return 504;
    case "DataLoss":
    case "Internal":
      return 500;
  }
}

/** Writes `{"status": <reason phrase>, "code": <int>, "message": <text>}` unless headers are already out. */
export function sendError(res: ServerResponse, err: AgentError): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  const status = httpStatusOf(err.code);
  sendJson(res, status, { status: STATUS_CODES[status] ?? "Error", code: status, message: err.message });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}
