// Streamlit Components v2 frontend that runs the MoneyKit Connect launcher
// (npm @moneykit/connect 0.3.28) and reports every callback to Python.
//
// Streamlit calls the default export each time the component mounts, and again when its
// `data` or the theme changes. A rerun that leaves `data` untouched calls nothing. The
// bundle itself is imported once per page (Streamlit caches the module by content), so
// the module-level registry below outlives mounts and unmounts. That is what lets a
// Connect session be launched exactly once and be picked up again by a later mount.

import MoneyKit from "@moneykit/connect";

import { appendEntry } from "./log.js";

// The launcher gives every overlay this same id and returns nothing, so the frame it
// created is found by comparing the frames present before and after a launch.
const FRAME_SELECTOR = 'iframe[id="moneykit-connect-frame"]';

// Streamlit may unmount a component and mount it again in the same render, for example
// when elements above it change. The overlay is only torn down when no mount claims the
// session within this delay, so such a remount does not kill a flow in progress.
const UNMOUNT_GRACE_MS = 1000;

/** Connect sessions of this page, by session_id. */
const sessions = new Map();

/** One mounted component (a view) per parent element Streamlit hands us. */
const views = new WeakMap();

const MODES = new Set(["link", "relink", "continue"]);

function readArgs(data) {
  if (data === null || typeof data !== "object") {
    return null;
  }
  const nonEmpty = (value) => typeof value === "string" && value.length > 0;
  const args = {
    mode: data.mode,
    sessionId: data.session_id,
    connectHost: data.connect_host,
    token: data.link_session_token,
    redirectUrl: data.redirect_url,
    colorScheme: data.color_scheme === "dark" ? "dark" : "light",
  };
  if (!MODES.has(args.mode) || !nonEmpty(args.sessionId) || !nonEmpty(args.connectHost)) {
    return null;
  }
  const needed = args.mode === "continue" ? args.redirectUrl : args.token;
  return nonEmpty(needed) ? args : null;
}

function createSession(sessionId) {
  return {
    id: sessionId,
    log: [],
    // starting → open → finished, or failed / resumed / abandoned.
    phase: "starting",
    outcome: "",
    frame: null,
    abandonControl: null,
    views: new Set(),
    teardownTimer: null,
  };
}

// The overlay covers the whole page, Streamlit's own buttons included, so its way out is drawn
// above it: a button that ends the session the way closing Connect does (an "exit" entry, which
// Python records and which releases a relink's reservation).
const ABANDON_TEXT = "Abandon this Connect session";

function showAbandonControl(session) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = ABANDON_TEXT;
  button.dataset.testid = "moneykit-connect-abandon";
  Object.assign(button.style, {
    position: "fixed",
    top: "12px",
    left: "12px",
    zIndex: "1000000",
    padding: "8px 14px",
    border: "1px solid rgba(0, 0, 0, 0.2)",
    borderRadius: "8px",
    background: "#ffffff",
    color: "#1f1f24",
    font: "500 14px/1.4 sans-serif",
    cursor: "pointer",
    boxShadow: "0 2px 8px rgba(0, 0, 0, 0.25)",
  });
  button.addEventListener("click", () => abandonFromOverlay(session));
  document.body.appendChild(button);
  session.abandonControl = button;
}

function hideAbandonControl(session) {
  if (session.abandonControl?.isConnected) {
    session.abandonControl.remove();
  }
  session.abandonControl = null;
}

function abandonFromOverlay(session) {
  if (session.phase !== "open") {
    return;
  }
  record(session, "exit", { error: null });
  if (session.frame?.isConnected) {
    session.frame.remove();
  }
  // Whatever the launcher's listener still hears belongs to no session of ours now.
  session.phase = "abandoned";
  session.outcome = "You abandoned this Connect session.";
  renderSession(session);
}

function errorMessage(error) {
  return error instanceof Error ? error.message : String(error);
}

function outcomeOf(type, data) {
  if (type === "success") {
    return "Connect finished: the bank account is linked.";
  }
  if (type === "relink_success") {
    return "Connect finished: the bank connection is repaired.";
  }
  const error = data.error;
  if (error && typeof error === "object") {
    const shown = typeof error.displayed_message === "string" ? error.displayed_message : "";
    return shown ? `Connect ended with an error: ${shown}` : "Connect ended with an error.";
  }
  return "Connect was closed before finishing.";
}

function statusText(session) {
  switch (session.phase) {
    case "starting":
      return "Starting MoneyKit Connect…";
    case "open":
      return "MoneyKit Connect is open…";
    case "resumed":
      return "Returning to the window where Connect was opened…";
    default:
      return session.outcome;
  }
}

function statusElement(parentElement) {
  // With isolated styles parentElement is a ShadowRoot; both have querySelector.
  const existing = parentElement.querySelector(".mkc-status");
  if (existing) {
    return existing;
  }
  const element = document.createElement("p");
  element.className = "mkc-status";
  element.setAttribute("role", "status");
  parentElement.appendChild(element);
  return element;
}

function renderView(view, phase, text) {
  const element = statusElement(view.parentElement);
  element.textContent = text;
  element.dataset.status = phase;
}

function renderSession(session) {
  for (const view of session.views) {
    renderView(view, session.phase, statusText(session));
  }
}

// Python reads the log from component *state*, which is kept across reruns; the whole
// log goes out every time, so whichever rerun Streamlit coalesces the updates into
// still sees every entry.
function publish(session, targets = session.views) {
  const snapshot = session.log.slice();
  for (const view of targets) {
    try {
      view.setStateValue("log", snapshot);
    } catch (error) {
      console.error("Linkdesk Connect: could not hand the event log to Streamlit.", error);
    }
  }
}

function record(session, type, data) {
  // A session given up by this page may still have a launcher listener attached (the
  // launcher offers no way to detach it), and that listener reacts to any later Connect
  // window on the same origin. Those calls belong to another session.
  if (session.phase === "abandoned") {
    return;
  }
  appendEntry(session.log, session.id, type, data);
  if (type !== "event" && session.phase !== "finished") {
    session.phase = "finished";
    session.outcome = outcomeOf(type, data);
    hideAbandonControl(session);
  }
  publish(session);
  renderSession(session);
}

function abandon(session, reason) {
  if (session.teardownTimer !== null) {
    clearTimeout(session.teardownTimer);
    session.teardownTimer = null;
  }
  if (session.frame?.isConnected) {
    session.frame.remove();
  }
  hideAbandonControl(session);
  if (session.phase === "open" || session.phase === "starting") {
    session.phase = "abandoned";
    session.outcome = reason;
    renderSession(session);
  }
}

function launch(session, args) {
  // Every active launcher acts on every Connect message, so two open overlays would
  // record each other's events and close each other. Only the newest session stays.
  for (const other of sessions.values()) {
    if (other !== session && other.phase === "open") {
      abandon(other, "Connect was replaced by a newer Connect session.");
    }
  }

  const onEvent = (event) => record(session, "event", { event });
  const onExit = (error) => record(session, "exit", { error });
  const onLinkSuccess = (exchangeableToken, institution, linkId) =>
    record(session, "success", { exchangeableToken, institution, linkId });
  const onRelinkSuccess = (institution, linkId) =>
    record(session, "relink_success", { institution, linkId });

  const before = new Set(document.querySelectorAll(FRAME_SELECTOR));
  try {
    // No containerID: the launcher then appends a position:fixed, full-viewport frame
    // to document.body. CCv2 runs this code in the app's own document (no iframe), so
    // the overlay covers the whole page, not just the component's box.
    const launcher = new MoneyKit({
      __connectSDKUIHost: args.connectHost,
      colorScheme: args.colorScheme,
    });
    if (args.mode === "link") {
      launcher.link(args.token, onLinkSuccess, onExit, onEvent);
    } else if (args.mode === "relink") {
      launcher.relink(args.token, onRelinkSuccess, onExit, onEvent);
    } else {
      launcher.continue(args.redirectUrl, onLinkSuccess, onExit, onEvent);
    }
  } catch (error) {
    session.phase = "failed";
    session.outcome = `Connect could not start: ${errorMessage(error)}`;
    return;
  }

  const frame = Array.from(document.querySelectorAll(FRAME_SELECTOR)).find(
    (candidate) => !before.has(candidate),
  );
  if (frame) {
    frame.title = "MoneyKit Connect";
    session.frame = frame;
    session.phase = "open";
    showAbandonControl(session);
  } else if (args.mode === "continue") {
    // In an OAuth popup, continue() only tells the opener to resume; the original
    // window finishes the flow and receives the callbacks.
    session.phase = "resumed";
  } else {
    session.phase = "failed";
    session.outcome = "Connect could not start: the launcher opened no window.";
  }
}

function teardown(session) {
  session.teardownTimer = null;
  if (session.views.size === 0) {
    abandon(
      session,
      "Connect was closed because the page changed. Start Connect again to continue.",
    );
  }
}

function detach(view) {
  const session = view.session;
  if (!session) {
    return;
  }
  view.session = null;
  session.views.delete(view);
  if (session.views.size === 0 && session.teardownTimer === null) {
    session.teardownTimer = setTimeout(() => teardown(session), UNMOUNT_GRACE_MS);
  }
}

function attach(view, session) {
  if (view.session === session) {
    return;
  }
  detach(view);
  view.session = session;
  session.views.add(view);
  if (session.teardownTimer !== null) {
    clearTimeout(session.teardownTimer);
    session.teardownTimer = null;
  }
  // A new mount may start with empty state (Streamlit drops the state of a widget that
  // was not drawn in a run), so it gets the log so far. Python ignores entries it has
  // already applied, which makes sending it again harmless.
  if (session.log.length > 0) {
    publish(session, [view]);
  }
}

export default function mountMoneyKitConnect(component) {
  const { data, parentElement, setStateValue } = component;

  let view = views.get(parentElement);
  if (!view) {
    view = { parentElement, session: null, setStateValue };
    views.set(parentElement, view);
  }
  view.setStateValue = setStateValue;

  const args = readArgs(data);
  if (!args) {
    detach(view);
    renderView(view, "failed", "Connect could not start: the component got invalid arguments.");
  } else {
    let session = sessions.get(args.sessionId);
    const isNew = session === undefined;
    if (isNew) {
      session = createSession(args.sessionId);
      sessions.set(args.sessionId, session);
    }
    attach(view, session);
    if (isNew) {
      launch(session, args);
    }
    renderSession(session);
  }

  // Streamlit runs the most recently returned cleanup when the component unmounts.
  return () => {
    detach(view);
    views.delete(parentElement);
  };
}
