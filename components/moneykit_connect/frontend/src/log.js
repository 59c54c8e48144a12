// The cumulative event log of one Connect session.
//
// Every launcher callback becomes one numbered entry, and the whole log is what the
// component hands to Python. Streamlit's trigger values keep only the last value per
// rerun, so a burst of Connect messages would collapse; a cumulative log that Python
// applies by (session_id, seq) loses nothing and can be re-sent safely.

export const ENTRY_TYPES = Object.freeze(["event", "success", "relink_success", "exit"]);

// Callback payloads come from postMessage (structured clone), which can carry values
// JSON cannot: BigInt makes JSON.stringify throw and a cycle never ends. Streamlit
// JSON-encodes the state synchronously, so one bad payload would stop every later
// publication. Each payload is therefore reduced to plain JSON when it is recorded;
// what cannot be expressed becomes null, which Python then rejects as malformed.
export function jsonSafe(value) {
  if (value === undefined) {
    return null;
  }
  try {
    const text = JSON.stringify(value, (_key, inner) =>
      typeof inner === "bigint" ? inner.toString() : inner,
    );
    return text === undefined ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

function entryData(type, data) {
  switch (type) {
    case "success":
      return {
        exchangeable_token: typeof data.exchangeableToken === "string" ? data.exchangeableToken : "",
        institution: jsonSafe(data.institution),
        link_id: typeof data.linkId === "string" ? data.linkId : "",
      };
    case "relink_success":
      return {
        institution: jsonSafe(data.institution),
        link_id: typeof data.linkId === "string" ? data.linkId : "",
      };
    case "exit":
      // The launcher passes whatever `data.error` the UI sent, `undefined` included.
      return { error: jsonSafe(data.error) };
    default:
      return jsonSafe(data.event);
  }
}

/**
 * Append one entry to `log` and return it. `seq` follows the callback order, starting at 1.
 *
 * `data` holds the callback arguments by name: `event` for "event"; `exchangeableToken`,
 * `institution`, `linkId` for "success"; `institution`, `linkId` for "relink_success";
 * `error` for "exit".
 */
export function appendEntry(log, sessionId, type, data) {
  if (!ENTRY_TYPES.includes(type)) {
    throw new Error(`unknown Connect log entry type ${type}`);
  }
  const entry = Object.freeze({
    session_id: sessionId,
    seq: log.length + 1,
    type,
    at: new Date().toISOString(),
    data: entryData(type, data),
  });
  log.push(entry);
  return entry;
}
