// The console's only ways to the server: POST /graphql and subscriptions on /graphql/ws, both with
// the admin key the designer signed in with.
import { createClient } from "graphql-ws/client";

/** An answer with `errors`: the first one's code (`CONFLICT`, `FORBIDDEN`, …) and message. */
export class ApiError extends Error {
  constructor(code, message, extensions = {}) {
    super(message);
    this.code = code;
    this.extensions = extensions;
  }
}

export async function graphql(key, query, variables = {}) {
  let response;
  try {
    response = await fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new ApiError("NETWORK", `The server cannot be reached (${error.message}).`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError("NETWORK", `The server answered ${response.status} without a GraphQL reply.`);
  }
  if (body.errors?.length) {
    const [first] = body.errors;
    throw new ApiError(first.extensions?.code ?? "ERROR", first.message, first.extensions ?? {});
  }
  return body.data;
}

/**
 * Subscribes to `query`; `onData` gets each result's data, `onError` a readable message, and
 * `onConnected` is called when the server has accepted the socket (again after a reconnection).
 * Returns a function that stops the subscription and closes the socket.
 */
export function subscribe(key, query, variables, { onData, onError, onConnected }) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = createClient({
    url: `${scheme}://${location.host}/graphql/ws`,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 5,
    shouldRetry: () => true,
    on: { connected: () => onConnected() },
  });
  const stop = client.subscribe(
    { query, variables },
    {
      next: (result) => {
        if (result.errors?.length) onError(result.errors[0].message);
        else onData(result.data);
      },
      error: (error) => onError(describeSocketError(error)),
      complete: () => {},
    },
  );
  return () => {
    stop();
    client.dispose();
  };
}

function describeSocketError(error) {
  if (Array.isArray(error)) return error.map((each) => each.message).join("; ");
  if (error && typeof error.code === "number") {
    return error.code === 4403
      ? "The server refused the key for live updates."
      : `The live connection closed (${error.code}${error.reason ? `: ${error.reason}` : ""}).`;
  }
  return error?.message ?? "The live connection failed.";
}
