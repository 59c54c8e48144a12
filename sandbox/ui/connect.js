/*
 * Sandbox Connect UI.
 *
 * Runs inside the iframe that @moneykit/connect opens at /start, /relink or /continue and speaks the
 * launcher's postMessage protocol: every message is {moneykit: true, type, data} posted to
 * window.parent with the launcher page's origin (the `origin` query parameter) as targetOrigin.
 * The flow itself is driven by the sandbox through same-origin /connect-api/* calls.
 */
(function () {
  "use strict";

  // ---------------------------------------------------------------------------- launch params
  // The launcher builds the query with query-string: sorted keys, strict percent-encoding, and a
  // bare key (no "=") for null. An empty value is treated as null too.
  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch (err) {
      return null;
    }
  }

  function parseQuery(search) {
    var out = Object.create(null);
    var text = search.charAt(0) === "?" ? search.slice(1) : search;
    text.split("&").forEach(function (part) {
      if (!part) return;
      var eq = part.indexOf("=");
      var key = safeDecode(eq < 0 ? part : part.slice(0, eq));
      if (key === null) return;
      var value = eq < 0 ? null : safeDecode(part.slice(eq + 1));
      out[key] = value === "" ? null : value;
    });
    return out;
  }

  function exactOrigin(value) {
    // Only a bare, already-normalised origin is usable as a postMessage targetOrigin.
    if (!value || value === "null") return null;
    try {
      return new URL(value).origin === value ? value : null;
    } catch (err) {
      return null;
    }
  }

  var params = parseQuery(window.location.search);
  var pathMode = window.location.pathname.replace(/\/+$/, "").split("/").pop();
  var mode = ["start", "relink", "continue"].indexOf(pathMode) >= 0 ? pathMode : "start";
  var sessionToken = params.linkSessionToken || null;
  var targetOrigin = exactOrigin(params.origin);
  var redirectURL = params.redirectURL || null;
  // The launcher's `stepTimers` option: show how long the user has been on the current screen.
  var stepTimers = params.stepTimers === "true";
  // After a /continue page (the bank's return window, no opener) has ended the flow, ask the
  // launcher to close that window: long enough after the ending for its callbacks to have run
  // (onSuccess at once, onExit after the launcher's 300 ms) and reached the page's own code.
  var CLOSE_OAUTH_DELAY_MS = 1500;

  // ------------------------------------------------------------------------------- messaging
  function post(type, data) {
    if (!targetOrigin) {
      console.warn("Connect sandbox: no usable `origin` parameter; not posting", type);
      return;
    }
    try {
      window.parent.postMessage({ moneykit: true, type: type, data: data }, targetOrigin);
    } catch (err) {
      console.warn("Connect sandbox: postMessage failed", err);
    }
  }

  function emit(name, properties) {
    post("link.event", { name: name, properties: properties || {} });
  }

  // ------------------------------------------------------------------------ theme and scheme
  var appearance = { scheme: "light", theme: null };
  var darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var DEFAULT_TEXT = {
    finderTitle: "Connect Your Bank",
    finderSubtitle: "",
    searchPlaceholder: "Search Banks",
    continueTitle: "Continue",
    doneTitle: "Done",
  };
  var HEX = /^#[0-9a-fA-F]{6}$/;

  function dig(obj, path) {
    return path.reduce(function (acc, key) {
      return acc && typeof acc === "object" ? acc[key] : undefined;
    }, obj);
  }

  // Theme values may be a string or {light, dark}.
  function forScheme(value, scheme) {
    if (typeof value === "string") return value;
    if (value && typeof value === "object" && typeof value[scheme] === "string") return value[scheme];
    return null;
  }

  var THEME_VARS = [
    ["--accent", ["colors", "accent"]],
    ["--bg", ["colors", "primaryBackground"]],
    ["--bg-2", ["colors", "secondaryBackground"]],
    ["--fg", ["colors", "primaryForeground"]],
    ["--fg-2", ["colors", "secondaryForeground"]],
    ["--fill", ["colors", "tertiaryFill"]],
    ["--separator", ["colors", "separator"]],
    ["--error", ["colors", "error"]],
    ["--success", ["colors", "success"]],
    ["--font", ["typography", "fontFamily"]],
    ["--overlay", ["modal", "overlayBackgroundColor"]],
    ["--radius-modal", ["modal", "borderRadius"]],
    ["--radius-button", ["components", "button", "borderRadius"]],
    ["--button-height", ["components", "button", "height"]],
    ["--cell-border", ["screens", "finder", "institutionCellBorder"]],
    ["--cell-bg", ["screens", "finder", "institutionCellBackgroundColor"]],
  ];

  function effectiveScheme() {
    if (appearance.scheme === "dark") return "dark";
    if (appearance.scheme === "auto") return darkQuery && darkQuery.matches ? "dark" : "light";
    return "light";
  }

  function themeText(key) {
    var paths = {
      finderTitle: ["screens", "finder", "title"],
      finderSubtitle: ["screens", "finder", "subtitle"],
      searchPlaceholder: ["screens", "finder", "searchPlaceholder"],
      continueTitle: ["components", "button", "continueTitle"],
      doneTitle: ["components", "button", "doneTitle"],
    };
    var value = dig(appearance.theme, paths[key]);
    return typeof value === "string" && value ? value : DEFAULT_TEXT[key];
  }

  function applyAppearance() {
    var scheme = effectiveScheme();
    var root = document.documentElement;
    root.dataset.scheme = scheme;
    THEME_VARS.forEach(function (entry) {
      var value = appearance.theme ? forScheme(dig(appearance.theme, entry[1]), scheme) : null;
      if (value) root.style.setProperty(entry[0], value);
      else root.style.removeProperty(entry[0]);
    });
    document.querySelectorAll("[data-theme-text]").forEach(function (node) {
      node.textContent = themeText(node.dataset.themeText);
    });
    document.querySelectorAll("[data-theme-placeholder]").forEach(function (node) {
      node.placeholder = themeText(node.dataset.themePlaceholder);
    });
    applyInstitutionColour();
  }

  function inkFor(hex) {
    var channels = [1, 3, 5].map(function (i) {
      var c = parseInt(hex.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var lum = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
    return 1.05 / (lum + 0.05) >= (lum + 0.05) / 0.05 ? "#ffffff" : "#111111";
  }

  function applyInstitutionColour() {
    var root = document.documentElement.style;
    var inst = flow.institution;
    var inherit = dig(appearance.theme, ["components", "button", "inheritInstitutionColor"]);
    var colour = null;
    if (inst && inherit !== false) {
      colour = effectiveScheme() === "dark" && inst.color_dark ? inst.color_dark : inst.color;
    }
    if (colour && HEX.test(colour)) {
      root.setProperty("--inst-color", colour);
      root.setProperty("--inst-ink", inkFor(colour));
    } else {
      root.setProperty("--inst-color", "var(--accent)");
      root.setProperty("--inst-ink", "#ffffff");
    }
  }

  if (darkQuery && darkQuery.addEventListener) {
    darkQuery.addEventListener("change", applyAppearance);
  }

  window.addEventListener("message", function (event) {
    if (!targetOrigin || event.origin !== targetOrigin) return;
    var message = event.data;
    if (!message || typeof message !== "object" || !("moneykit" in message)) return;
    // The OAuth return page (in the popup this frame opened) resumes the flow; the launcher
    // puts its payload under `eventData`, not `data`.
    if (message.type === "link.resume") {
      var resume = message.eventData && typeof message.eventData === "object" ? message.eventData : {};
      if (typeof resume.redirectURL === "string") resumeOAuth(resume.redirectURL);
      return;
    }
    if (event.source !== window.parent) return;
    var data = message.data && typeof message.data === "object" ? message.data : {};
    if (message.type === "connect.set_color_scheme") {
      if (["light", "dark", "auto"].indexOf(data.colorScheme) >= 0) {
        appearance.scheme = data.colorScheme;
        applyAppearance();
      }
    } else if (message.type === "connect.set_theme") {
      if (data.theme && typeof data.theme === "object") {
        appearance.theme = data.theme;
        applyAppearance();
      }
    }
  });

  // ------------------------------------------------------------------------------ flow state
  var flow = {
    session: null,
    institution: null,
    accounts: [],
    completion: null,
    lastError: null,
    finished: false,
    screen: null,
    screenStartedAt: 0,
    tracked: [],
    searchTerm: "",
    searchTimer: null,
    lastSearchSent: "",
    popup: null,
    oauthPoll: null,
    resuming: false,
    permissionsGranted: false,
  };

  function closeScreenTimer() {
    if (!flow.screen) return;
    var seconds = (performance.now() - flow.screenStartedAt) / 1000;
    flow.tracked.push({
      tag: flow.screen.toLowerCase(),
      name: flow.screen,
      duration: Math.round(seconds * 1000) / 1000,
    });
    flow.screen = null;
  }

  function enterScreen(name) {
    closeScreenTimer();
    flow.screen = name;
    flow.screenStartedAt = performance.now();
    emit("change_screen", { current_screen_name: name });
    showStepTime();
  }

  function showStepTime() {
    var timer = document.getElementById("step-timer");
    if (!timer) return;
    var seconds = flow.screen ? (performance.now() - flow.screenStartedAt) / 1000 : 0;
    timer.textContent = flow.screen ? flow.screen + " \u00b7 " + seconds.toFixed(1) + " s" : "";
  }

  function startStepTimers() {
    if (!stepTimers) return;
    var timer = el("p", { id: "step-timer", class: "step-timer", role: "timer", "aria-label": "Step timer" });
    document.querySelector(".foot").append(timer);
    setInterval(showStepTime, 200);
    showStepTime();
  }

  // --------------------------------------------------------------------------------- helpers
  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key.slice(0, 2) === "on") node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function render() {
    var screen = document.getElementById("screen");
    var nodes = Array.prototype.filter.call(arguments, function (node) {
      return node !== null && node !== undefined;
    });
    screen.replaceChildren.apply(screen, nodes);
  }

  function setBack(handler) {
    var back = document.getElementById("back-button");
    back.hidden = !handler;
    back.onclick = handler || null;
  }

  function avatar(inst) {
    var frag = document.createDocumentFragment();
    frag.append(
      el("img", { class: "light-only", src: inst.avatar, alt: "", width: 40, height: 40 }),
      el("img", { class: "dark-only", src: inst.avatar_dark || inst.avatar, alt: "", width: 40, height: 40 })
    );
    return frag;
  }

  function money(balance) {
    if (!balance || typeof balance.current !== "number") return "";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: balance.currency || "USD" })
        .format(balance.current);
    } catch (err) {
      return balance.current.toFixed(2);
    }
  }

  function normaliseError(raw) {
    if (raw && typeof raw.error_id === "string") {
      return {
        error_id: raw.error_id,
        displayed_message: String(raw.displayed_message || "Something went wrong."),
        request_id: typeof raw.request_id === "string" ? raw.request_id : null,
      };
    }
    return {
      error_id: "internal_error",
      displayed_message: "Something went wrong. Please try again.",
      request_id: null,
    };
  }

  function api(method, path, body) {
    var url = "/connect-api/" + path + "?mode=" + encodeURIComponent(mode);
    return fetch(url, {
      method: method,
      headers: {
        Authorization: "Bearer " + (sessionToken || ""),
        Accept: "application/json",
        "Content-Type": "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    }).then(
      function (response) {
        return response.json().then(
          function (payload) {
            if (!response.ok) throw normaliseError(payload && payload.error);
            return payload;
          },
          function () {
            throw normaliseError(null);
          }
        );
      },
      function () {
        throw normaliseError(null);
      }
    );
  }

  function needsCredentials(inst) {
    return inst.login === "credentials";
  }

  // --------------------------------------------------------------------------------- screens
  function showLoading(text) {
    setBack(null);
    render(el("div", { class: "loading" }, el("div", { class: "spinner", "aria-hidden": "true" }), el("p", { text: text })));
  }

  function showFinder() {
    flow.institution = null;
    applyInstitutionColour();
    setBack(null);
    enterScreen("Finder");
    var search = el("input", {
      type: "search",
      class: "search",
      "aria-label": "Search institutions",
      placeholder: themeText("searchPlaceholder"),
      "data-theme-placeholder": "searchPlaceholder",
      autocomplete: "off",
      spellcheck: "false",
    });
    search.value = flow.searchTerm;
    var list = el("ul", { class: "inst-list", "aria-label": "Institutions" });

    function fill() {
      var term = search.value.trim();
      var needle = term.toLowerCase();
      var matches = flow.session.institutions.filter(function (inst) {
        return !needle || inst.name.toLowerCase().indexOf(needle) >= 0 ||
          (inst.domain || "").toLowerCase().indexOf(needle) >= 0;
      });
      list.replaceChildren.apply(
        list,
        matches.map(function (inst) {
          return el(
            "li",
            {},
            el(
              "button",
              { type: "button", class: "inst", onclick: function () { selectInstitution(inst, false); } },
              avatar(inst),
              el("span", { text: inst.name })
            )
          );
        })
      );
      if (!matches.length) list.append(el("li", { class: "muted", text: 'No institutions match "' + term + '".' }));
    }

    search.addEventListener("input", function () {
      flow.searchTerm = search.value;
      fill();
      clearTimeout(flow.searchTimer);
      flow.searchTimer = setTimeout(function () {
        var term = search.value.trim();
        if (term && term !== flow.lastSearchSent) {
          flow.lastSearchSent = term;
          emit("search_institution", { search_term: term });
        }
      }, 350);
    });
    var subtitle = themeText("finderSubtitle");
    render(
      el("h1", { id: "screen-title", "data-theme-text": "finderTitle", text: themeText("finderTitle") }),
      subtitle ? el("p", { class: "muted", "data-theme-text": "finderSubtitle", text: subtitle }) : null,
      search,
      list
    );
    fill();
  }

  function selectInstitution(inst, preselected) {
    flow.institution = inst;
    applyInstitutionColour();
    emit("select_institution", { institution_id: inst.id, institution_name: inst.name });
    if (inst.down) showInstitutionAlert(inst, preselected);
    else if (needsCredentials(inst)) showCredentials(inst, preselected);
    else if (inst.login === "oauth") startOAuth(inst, preselected);
    else connectInstant(inst);
  }

  function showInstitutionAlert(inst, preselected) {
    var canGoBack = !preselected && flow.session.mode !== "relink";
    setBack(null);
    enterScreen("InstitutionAlert");
    var alertError = {
      error_id: "institution_down",
      displayed_message: inst.name + " is not responding right now. Please try again later.",
      request_id: null,
    };
    render(
      el("div", { class: "status-icon bad", "aria-hidden": "true", text: "!" }),
      el("h1", { id: "screen-title", class: "center", text: inst.name + " is unavailable" }),
      el("p", { class: "center", role: "alert", text: alertError.displayed_message }),
      el("div", { class: "spacer" }),
      canGoBack
        ? el("button", {
            type: "button",
            class: "primary",
            text: "Choose another bank",
            onclick: function () {
              emit("dismiss_institution_alert", {});
              showFinder();
            },
          })
        : null,
      el("button", {
        type: "button",
        class: "secondary",
        text: "Exit",
        onclick: function () {
          emit("acknowledge_institution_alert", {});
          exit(alertError);
        },
      })
    );
  }

  function brand(inst, title) {
    return el("div", { class: "brand" }, avatar(inst), el("h1", { id: "screen-title", text: title }));
  }

  function showCredentials(inst, preselected) {
    var relink = flow.session.mode === "relink";
    setBack(relink || preselected ? null : showFinder);
    enterScreen("Credentials");
    var username = el("input", { id: "username", name: "username", type: "text", autocomplete: "username", required: true, spellcheck: "false" });
    var password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
    var submit = el("button", { type: "submit", class: "primary", "data-theme-text": "continueTitle", text: themeText("continueTitle") });
    var form = el(
      "form",
      { novalidate: true },
      el("label", { for: "username" }, "Username", username),
      el("label", { for: "password" }, "Password", password),
      el(
        "p",
        { class: "hint" },
        "Sandbox logins: ", el("code", { text: "user_good" }), " / ", el("code", { text: "pass_good" }),
        "; ", el("code", { text: "user_mfa" }), " asks for code ", el("code", { text: "123456" }),
        "; ", el("code", { text: "user_otp" }), " has it sent to a device first",
        "; ", el("code", { text: "user_locked" }), " is locked; anything else fails."
      ),
      submit,
      el(
        "div",
        { class: "links" },
        el("button", {
          type: "button",
          class: "link",
          text: "Forgot password?",
          onclick: function () {
            emit("select_reset_password", {});
            showResetPassword(inst, preselected);
          },
        }),
        el("button", {
          type: "button",
          class: "link",
          text: "Get help",
          onclick: function () {
            emit("select_help", {});
            showHelp(inst, preselected);
          },
        })
      )
    );
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      submit.disabled = true;
      emit("submit_credentials", {});
      api("POST", "institution", { institution_id: inst.id, username: username.value, password: password.value }).then(
        afterLogin,
        function (err) {
          showError(err, function () { showCredentials(inst, preselected); });
        }
      );
    });
    render(
      brand(inst, (relink ? "Reconnect to " : "Log in to ") + inst.name),
      el("p", { class: "muted", text: "Enter your " + inst.name + " online banking details." }),
      form
    );
    username.focus();
  }

  function showHelp(inst, preselected) {
    setBack(function () { showCredentials(inst, preselected); });
    enterScreen("Help");
    render(
      brand(inst, "Need help logging in?"),
      el("p", { class: "muted", text: "Use the username and password of " + inst.name + "'s online banking. If you forgot your password, reset it with " + inst.name + " first." }),
      el("div", { class: "spacer" }),
      el("button", {
        type: "button",
        class: "primary",
        text: "Reset password",
        onclick: function () {
          emit("select_reset_password", {});
          showResetPassword(inst, preselected);
        },
      }),
      el("button", { type: "button", class: "secondary", text: "Back to login", onclick: function () { showCredentials(inst, preselected); } })
    );
  }

  function showResetPassword(inst, preselected) {
    setBack(function () { showCredentials(inst, preselected); });
    enterScreen("ResetPassword");
    var status = el("p", { class: "muted", role: "status", text: "" });
    render(
      brand(inst, "Reset your password"),
      el("p", { class: "muted", text: "Passwords are reset on " + inst.name + "'s own website. Come back and log in when you have a new one." }),
      el("div", { class: "spacer" }),
      el("button", {
        type: "button",
        class: "primary",
        text: "Open " + inst.name + " website",
        onclick: function () {
          emit("open_institution_website", {});
          // Offline sandbox: the bank's website is named, never opened.
          status.textContent = "Go to " + (inst.domain || inst.name) + " to reset your password.";
        },
      }),
      status,
      el("button", { type: "button", class: "secondary", text: "Back to login", onclick: function () { showCredentials(inst, preselected); } })
    );
  }

  function showOtpDevice(inst, devices) {
    setBack(null);
    enterScreen("OTPDevice");
    var submit = el("button", { type: "submit", class: "primary", "data-theme-text": "continueTitle", text: themeText("continueTitle") });
    var fieldset = el("fieldset", {}, el("legend", { text: "Send the code to" }));
    (devices || []).forEach(function (device, index) {
      fieldset.append(
        el(
          "label",
          { class: "account" },
          el("input", { type: "radio", name: "device", value: device.device_id, checked: index === 0 }),
          el("span", { class: "details", text: device.label })
        )
      );
    });
    var form = el("form", {}, fieldset, submit);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      var chosen = form.querySelector("input[name=device]:checked");
      if (!chosen) return;
      submit.disabled = true;
      emit("submit_otp_device", {});
      api("POST", "otp/device", { device_id: chosen.value }).then(afterLogin, function (err) {
        showError(err, function () { showOtpDevice(inst, devices); });
      });
    });
    render(brand(inst, "Where should we send your code?"), form);
  }

  function showOtp(inst) {
    setBack(null);
    enterScreen("OTP");
    var code = el("input", { id: "otp-code", name: "code", type: "text", inputmode: "numeric", autocomplete: "one-time-code", required: true });
    var submit = el("button", { type: "submit", class: "primary", "data-theme-text": "continueTitle", text: themeText("continueTitle") });
    var form = el(
      "form",
      { novalidate: true },
      el("label", { for: "otp-code" }, "One-time code", code),
      el("p", { class: "hint" }, "Sandbox code: ", el("code", { text: "123456" })),
      submit
    );
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      submit.disabled = true;
      emit("submit_otp", {});
      api("POST", "mfa", { code: code.value }).then(afterLogin, function (err) {
        showError(err, function () { showOtp(inst); });
      });
    });
    render(brand(inst, "Enter the code we sent"), form);
    code.focus();
  }

  var PRODUCT_LABELS = {
    account_numbers: "Account and routing numbers",
    identity: "Account owner names and contact details",
    transactions: "Transactions",
    investments: "Investment holdings and transactions",
  };

  function showPermissions() {
    var inst = flow.institution;
    setBack(null);
    enterScreen("Permissions");
    var boxes = [];
    var fieldset = el("fieldset", {}, el("legend", { text: "Share with this app" }));
    flow.session.permissions.forEach(function (row) {
      var box = el("input", { type: "checkbox", name: "product", value: row.product, checked: true, disabled: row.required });
      boxes.push(box);
      fieldset.append(
        el(
          "label",
          { class: "account" },
          box,
          el(
            "span",
            { class: "details" },
            el("span", { text: (PRODUCT_LABELS[row.product] || row.product) + (row.required ? " (required)" : "") }),
            row.reason ? el("span", { class: "muted", text: "Used to " + row.reason }) : null
          )
        )
      );
    });
    var submit = el("button", { type: "submit", class: "primary", text: "Allow" });
    var form = el("form", {}, fieldset, submit);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      submit.disabled = true;
      var chosen = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
      emit("submit_permissions", {});
      api("POST", "permissions", { products: chosen }).then(
        function () {
          flow.permissionsGranted = true;
          showAccounts();
        },
        function (err) {
          showError(err, showPermissions);
        }
      );
    });
    render(
      brand(inst, "Allow access to your data"),
      el("p", { class: "muted", text: "Accounts and balances are always shared. Choose what else " + inst.name + " may share." }),
      form
    );
  }

  function showMfa(inst) {
    setBack(null);
    enterScreen("MFA");
    var code = el("input", { id: "mfa-code", name: "code", type: "text", inputmode: "numeric", autocomplete: "one-time-code", required: true });
    var submit = el("button", { type: "submit", class: "primary", "data-theme-text": "continueTitle", text: themeText("continueTitle") });
    var form = el(
      "form",
      { novalidate: true },
      el("label", { for: "mfa-code" }, "Verification code", code),
      el("p", { class: "hint" }, "Sandbox code: ", el("code", { text: "123456" })),
      submit
    );
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      submit.disabled = true;
      emit("submit_mfa", {});
      api("POST", "mfa", { code: code.value }).then(afterLogin, function (err) {
        showError(err, function () { showMfa(inst); });
      });
    });
    render(
      brand(inst, "Enter verification code"),
      el("p", { class: "muted", text: inst.name + " sent a code to your phone." }),
      form
    );
    code.focus();
  }

  // ---------------------------------------------------------------------------------- OAuth
  function startOAuth(inst, preselected) {
    showLoading("Preparing " + inst.name + "\u2026");
    api("POST", "institution", { institution_id: inst.id }).then(afterLogin, function (err) {
      showError(err, preselected ? null : showFinder);
    });
  }

  function stopOAuthPoll() {
    if (flow.oauthPoll) clearInterval(flow.oauthPoll);
    flow.oauthPoll = null;
  }

  function closePopup() {
    try {
      if (flow.popup && !flow.popup.closed) flow.popup.close();
    } catch (err) {
      // A popup whose opener link was cut can no longer be closed from here.
    }
    flow.popup = null;
  }

  function showOAuth(inst, url) {
    setBack(null);
    enterScreen("OAuth");
    var status = el("p", { class: "muted", role: "status", text: "" });
    var open = el("button", {
      type: "button",
      class: "primary",
      text: "Continue to " + inst.name,
      onclick: function () {
        emit("open_oauth", {});
        // Opened from this frame, so this frame is the popup's opener and receives link.resume.
        flow.popup = window.open(url, "moneykit-oauth", "popup,width=520,height=720");
        status.textContent = "Waiting for " + inst.name + "\u2026 Finish in the window that opened.";
        watchOAuth();
      },
    });
    render(
      brand(inst, "Continue to " + inst.name),
      el("p", { class: "muted", text: "You will sign in on " + inst.name + "'s own website and come back here." }),
      el("div", { class: "spacer" }),
      open,
      status
    );
  }

  // While the bank window is open, ask the sandbox now and then: if the return page lost its
  // opener it finishes the flow through /continue, and this frame must learn about it.
  function watchOAuth() {
    stopOAuthPoll();
    flow.oauthPoll = setInterval(function () {
      if (flow.resuming || flow.finished) return stopOAuthPoll();
      api("GET", "oauth/status").then(function (status) {
        if (!status.completed || !status.completion || flow.resuming || flow.finished) return;
        stopOAuthPoll();
        closePopup();
        flow.completion = status.completion;
        showSuccess(true);
      }, function () {});
    }, 1000);
  }

  function resumeOAuth(url) {
    if (flow.resuming || flow.finished) return;
    flow.resuming = true;
    stopOAuthPoll();
    showLoading("Finishing with your bank\u2026");
    api("POST", "oauth/finish", { redirect_url: url }).then(
      function (result) {
        flow.resuming = false;
        closePopup();
        afterLogin(result);
      },
      function (err) {
        flow.resuming = false;
        closePopup();
        var inst = flow.institution;
        showError(err, inst ? function () { startOAuth(inst, true); } : null);
      }
    );
  }

  function connectInstant(inst) {
    showLoading("Connecting to " + inst.name + "\u2026");
    api("POST", "institution", { institution_id: inst.id }).then(afterLogin, function (err) {
      showError(err, null);
    });
  }

  function afterLogin(result) {
    if (result.mfa && result.mfa.kind === "otp_device") {
      showOtpDevice(flow.institution, result.mfa.devices);
    } else if (result.mfa && result.mfa.kind === "otp") {
      showOtp(flow.institution);
    } else if (result.mfa) {
      showMfa(flow.institution);
    } else if (result.oauth) {
      showOAuth(flow.institution, result.oauth.url);
    } else if (result.completion) {
      flow.completion = result.completion;
      showSuccess();
    } else {
      flow.accounts = result.accounts || [];
      var asks = flow.session && flow.session.permissions && flow.session.permissions.length;
      if (asks && !flow.permissionsGranted) showPermissions();
      else showAccounts();
    }
  }

  function showAccounts() {
    var inst = flow.institution;
    setBack(null);
    enterScreen("Accounts");
    var submit = el("button", { type: "submit", class: "primary", text: "Link accounts" });
    var boxes = [];
    var fieldset = el("fieldset", {}, el("legend", { text: "Accounts" }));
    flow.accounts.forEach(function (account) {
      var box = el("input", { type: "checkbox", name: "account", value: account.account_id, checked: true });
      box.addEventListener("change", function () {
        submit.disabled = !boxes.some(function (b) { return b.checked; });
      });
      boxes.push(box);
      fieldset.append(
        el(
          "label",
          { class: "account" },
          box,
          el(
            "span",
            { class: "details" },
            el("span", { text: account.name }),
            el("span", { class: "muted", text: account.account_mask ? "\u2022\u2022\u2022\u2022 " + account.account_mask : "" })
          ),
          el("span", { class: "amount", text: money(account.balance) })
        )
      );
    });
    var form = el("form", {}, fieldset, submit);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var ids = boxes.filter(function (b) { return b.checked; }).map(function (b) { return b.value; });
      if (!ids.length || submit.disabled) return;
      submit.disabled = true;
      emit("submit_accounts", {});
      api("POST", "complete", { account_ids: ids }).then(
        function (result) {
          flow.completion = result.completion;
          showSuccess();
        },
        function (err) {
          showError(err, showAccounts);
        }
      );
    });
    render(
      brand(inst, "Select accounts"),
      el("p", { class: "muted", text: "Choose which " + inst.name + " accounts to share." }),
      form
    );
  }

  function showSuccess(elsewhere) {
    var completion = flow.completion;
    flow.institution = completion.institution;
    flow.lastError = null;
    applyInstitutionColour();
    setBack(null);
    enterScreen("Success");
    var name = completion.institution.name;
    var done = el("button", { type: "button", class: "primary", "data-theme-text": "doneTitle", text: themeText("doneTitle"), onclick: finishSuccess });
    render(
      el("div", { class: "status-icon ok", "aria-hidden": "true", text: "\u2713" }),
      el("h1", { id: "screen-title", class: "center", text: "Success" }),
      el("p", {
        class: "center muted",
        text: (elsewhere ? "Finished in another window. " : "") + (completion.kind === "relink"
          ? "Your " + name + " connection has been repaired."
          : "Your " + name + " accounts are now connected."),
      }),
      el("div", { class: "spacer" }),
      done
    );
    done.focus();
  }

  function showError(err, retry) {
    flow.lastError = err;
    emit("error", { error_id: err.error_id, displayed_message: err.displayed_message, request_id: err.request_id });
    setBack(null);
    enterScreen("Error");
    render(
      el("div", { class: "status-icon bad", "aria-hidden": "true", text: "!" }),
      el("h1", { id: "screen-title", class: "center", text: "Couldn't connect" }),
      el("p", { class: "center", role: "alert", text: err.displayed_message }),
      err.request_id ? el("p", { class: "request-id", text: "Request ID: " + err.request_id }) : null,
      el("div", { class: "spacer" }),
      retry ? el("button", { type: "button", class: "primary", text: "Try again", onclick: retry }) : null,
      el("button", { type: "button", class: "secondary", text: "Exit", onclick: function () { exit(flow.lastError); } })
    );
  }

  function showFatal(err) {
    flow.lastError = err;
    emit("error", { error_id: err.error_id, displayed_message: err.displayed_message, request_id: err.request_id });
    setBack(null);
    enterScreen("Error");
    render(
      el("div", { class: "status-icon bad", "aria-hidden": "true", text: "!" }),
      el("h1", { id: "screen-title", class: "center", text: "Unable to open Connect" }),
      el("p", { class: "center", role: "alert", text: err.displayed_message }),
      err.request_id ? el("p", { class: "request-id", text: "Request ID: " + err.request_id }) : null,
      el("div", { class: "spacer" }),
      el("button", { type: "button", class: "secondary", text: "Exit", onclick: function () { exit(flow.lastError); } })
    );
  }

  function showClosing() {
    setBack(null);
    document.getElementById("close-button").disabled = true;
    showLoading("Closing\u2026");
  }

  // ------------------------------------------------------------------------------ endings
  function linkedInstitution(completion) {
    var linked = {};
    Object.keys(completion.institution).forEach(function (key) {
      linked[key] = completion.institution[key];
    });
    linked.selectedAccounts = completion.selected_accounts || [];
    linked.trackedScreens = flow.tracked.slice();
    return linked;
  }

  function finishSuccess() {
    if (flow.finished) return;
    flow.finished = true;
    var completion = flow.completion;
    emit("success", {});
    closeScreenTimer();
    var institution = linkedInstitution(completion);
    if (completion.kind === "relink") {
      post("relink.complete", { institution: institution, link_id: completion.link_id });
    } else {
      post("link.complete", {
        exchangeableToken: completion.exchangeable_token,
        institution: institution,
        link_id: completion.link_id,
      });
    }
    showClosing();
    closeOAuthWindow();
  }

  // The return window of an OAuth bank that lost its opener finished the flow itself (/continue
  // with a redirectURL): once the ending is out, the launcher may close that window.
  function closeOAuthWindow() {
    if (mode !== "continue" || !redirectURL) return;
    setTimeout(function () { post("link.close_oauth", {}); }, CLOSE_OAUTH_DELAY_MS);
  }

  function exit(error) {
    if (flow.finished) return;
    flow.finished = true;
    emit("exit", {});
    closeScreenTimer();
    post("link.exit", { error: error || null });
    showClosing();
    closeOAuthWindow();
  }

  // --------------------------------------------------------------------------------- start
  function start() {
    var root = document.documentElement;
    if (params.viewMode === "direct") root.classList.add("direct");
    if (params.device && params.device.indexOf("mobile") === 0) root.classList.add("mobile");
    if (params.applicationName) document.getElementById("bar-title").textContent = params.applicationName;
    document.getElementById("close-button").addEventListener("click", function () {
      exit(flow.lastError);
    });
    applyAppearance();
    startStepTimers();

    post("connect.started", {});
    emit("open", {});

    if (!sessionToken) {
      showFatal({
        error_id: "invalid_link_session",
        displayed_message: "No link session was given. Please close this window and start again.",
        request_id: null,
      });
      return;
    }
    api("GET", "session").then(
      function (session) {
        flow.session = session;
        if (session.completion) {
          flow.completion = session.completion;
          showSuccess();
        } else if (mode === "continue" && redirectURL && session.oauth_institution_id) {
          // Back from the bank without an opener: finish the OAuth login in this window.
          flow.institution = session.institutions.filter(function (inst) {
            return inst.id === session.oauth_institution_id;
          })[0] || null;
          applyInstitutionColour();
          resumeOAuth(redirectURL);
        } else if (session.mode === "relink") {
          selectInstitution(session.institutions[0], true);
        } else {
          var preselected = session.institutions.filter(function (inst) {
            return inst.id === session.preselected_institution_id;
          })[0];
          if (preselected) selectInstitution(preselected, true);
          else showFinder();
        }
      },
      showFatal
    );
  }

  start();
})();
