// Sign in: password; a new account with the emailed code; a forgotten password; and
// Sign-In-With-Solana through a browser wallet when one is installed.

import { api, keepTokens, setUser, signIn } from "../api.js";
import { explain, fill, h, toast } from "../ui.js";

const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/** Base58 (Bitcoin alphabet), as Solana writes signatures and addresses. */
export function base58(bytes) {
  const digits = [0];
  for (const byte of bytes) {
    let carry = byte;
    for (let i = 0; i < digits.length; i++) {
      carry += digits[i] << 8;
      digits[i] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  let out = "";
  for (const byte of bytes) {
    if (byte !== 0) break;
    out += "1";
  }
  for (let i = digits.length - 1; i >= 0; i--) out += ALPHABET[digits[i]];
  return out;
}

// Wallets that follow the Wallet Standard announce themselves through window events.
const standardWallets = [];
function listenForStandardWallets() {
  const register = (...wallets) => {
    for (const w of wallets) {
      if (w?.features?.["solana:signMessage"] && w.features["standard:connect"]) standardWallets.push(w);
    }
    return () => {};
  };
  window.addEventListener("wallet-standard:register-wallet", (event) => {
    try {
      event.detail({ register });
    } catch {
      // A wallet that fails to register is simply not offered.
    }
  });
  window.dispatchEvent(new CustomEvent("wallet-standard:app-ready", { detail: { register } }));
}
listenForStandardWallets();

/** The browser's Solana wallets: {name, address(), sign(message)}. */
export function browserWallets() {
  const found = [];
  for (const w of standardWallets) {
    let account = null;
    found.push({
      name: w.name,
      async address() {
        const { accounts } = await w.features["standard:connect"].connect();
        account = accounts[0];
        return account.address;
      },
      async sign(message) {
        const [out] = await w.features["solana:signMessage"].signMessage({
          account,
          message: new TextEncoder().encode(message),
        });
        return out.signature;
      },
    });
  }
  const injected = window.phantom?.solana ?? window.solana;
  if (injected?.signMessage && !found.length) {
    found.push({
      name: injected.isPhantom ? "Phantom" : "Solana wallet",
      async address() {
        const res = await injected.connect();
        return (res?.publicKey ?? injected.publicKey).toString();
      },
      async sign(message) {
        const res = await injected.signMessage(new TextEncoder().encode(message), "utf8");
        return res.signature ?? res;
      },
    });
  }
  return found;
}

function field(label, attrs) {
  const id = `f-${attrs.name}-${Math.random().toString(36).slice(2, 7)}`;
  return h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, ...attrs }));
}

function errorBox() {
  return h("p", { class: "error", role: "alert", "aria-live": "assertive" });
}

async function finish(user) {
  toast(`Welcome, ${user.first_name || user.username || "member"}.`);
  location.hash = ["operator", "admin"].includes(user.role) ? "#/operator" : "#/home";
}

function passwordForm(show) {
  const err = errorBox();
  const form = h(
    "form",
    { class: "stack", "aria-label": "Sign in with password" },
    field("Username or email", { name: "identifier", autocomplete: "username", required: true }),
    field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }),
    err,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    h(
      "p",
      { class: "muted" },
      h("button", { type: "button", class: "link", onclick: () => show("forgot") }, "Forgot your password?"),
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    err.textContent = "";
    form.setAttribute("aria-busy", "true");
    try {
      const user = await signIn(data.get("identifier").trim(), data.get("password"));
      await finish(user);
    } catch (ex) {
      if (ex.code === "EMAIL_NOT_VERIFIED") {
        const id = data.get("identifier").trim();
        show("verify", { email: id.includes("@") ? id : "", password: data.get("password"), identifier: id });
        return;
      }
      err.textContent = explain(ex);
    } finally {
      form.removeAttribute("aria-busy");
    }
  });
  return form;
}

function registerForm(show) {
  const err = errorBox();
  const role = h(
    "select",
    { id: "f-role", name: "role" },
    h("option", { value: "prosumer" }, "Prosumer: I produce and use energy"),
    h("option", { value: "consumer" }, "Consumer: I use energy"),
    h("option", { value: "investor" }, "Investor: I hold shares in installations"),
  );
  const form = h(
    "form",
    { class: "stack", "aria-label": "Create an account" },
    field("Username", { name: "username", autocomplete: "username", required: true, minlength: 3, maxlength: 64 }),
    field("Email", { name: "email", type: "email", autocomplete: "email", required: true }),
    field("Password (10+ characters, mixed)", {
      name: "password",
      type: "password",
      autocomplete: "new-password",
      required: true,
      minlength: 10,
    }),
    h("div", { class: "field" }, h("label", { for: "f-role" }, "I am a"), role),
    field("Region (from your community, optional)", { name: "region", autocomplete: "off" }),
    err,
    h("button", { type: "submit", class: "primary" }, "Create account"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    if (!data.region) delete data.region;
    err.textContent = "";
    try {
      await api("auth/register", { method: "POST", body: data, auth: false });
      show("verify", { email: data.email, password: data.password, identifier: data.username });
    } catch (ex) {
      err.textContent = explain(ex);
    }
  });
  return form;
}

function verifyForm(show, { email = "", password = "", identifier = "" } = {}) {
  const err = errorBox();
  const form = h(
    "form",
    { class: "stack", "aria-label": "Verify your email" },
    h("p", {}, "We emailed you a 6-digit code. It is valid for 10 minutes."),
    field("Email", { name: "email", type: "email", value: email, required: true, autocomplete: "email" }),
    field("Code", {
      name: "otp",
      inputmode: "numeric",
      pattern: "[0-9]{6}",
      maxlength: 6,
      required: true,
      autocomplete: "one-time-code",
    }),
    err,
    h("button", { type: "submit", class: "primary" }, "Verify and sign in"),
    h(
      "button",
      {
        type: "button",
        class: "link",
        onclick: async () => {
          const to = new FormData(form).get("email");
          await api("auth/resend-otp", { method: "POST", body: { email: to }, auth: false }).catch(() => null);
          toast("If the address has an account waiting, a new code is on its way.");
        },
      },
      "Send a new code",
    ),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    err.textContent = "";
    try {
      await api("auth/verify-email", {
        method: "POST",
        body: { email: data.get("email"), otp: data.get("otp") },
        auth: false,
      });
      if (password) {
        await finish(await signIn(identifier || data.get("email"), password));
      } else {
        toast("Your email is verified; sign in now.");
        show("password");
      }
    } catch (ex) {
      err.textContent = explain(ex);
    }
  });
  return form;
}

function forgotForm(show) {
  const err = errorBox();
  let sent = false;
  const codeFields = h(
    "div",
    { class: "stack", hidden: true },
    field("Code from the email", { name: "otp", inputmode: "numeric", maxlength: 6, autocomplete: "one-time-code" }),
    field("New password", { name: "new_password", type: "password", autocomplete: "new-password", minlength: 10 }),
  );
  const submit = h("button", { type: "submit", class: "primary" }, "Email me a code");
  const form = h(
    "form",
    { class: "stack", "aria-label": "Reset your password" },
    field("Email", { name: "email", type: "email", required: true, autocomplete: "email" }),
    codeFields,
    err,
    submit,
    h("button", { type: "button", class: "link", onclick: () => show("password") }, "Back to sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    err.textContent = "";
    try {
      if (!sent) {
        await api("auth/password/forgot", { method: "POST", body: { email: data.get("email") }, auth: false });
        sent = true;
        codeFields.hidden = false;
        submit.textContent = "Set the new password";
        toast("If the address has an account, a code is on its way.");
      } else {
        await api("auth/password/reset", {
          method: "POST",
          body: { email: data.get("email"), otp: data.get("otp"), new_password: data.get("new_password") },
          auth: false,
        });
        toast("Your password is changed; sign in with it.");
        show("password");
      }
    } catch (ex) {
      err.textContent = explain(ex);
    }
  });
  return form;
}

function walletPanel() {
  const err = errorBox();
  const wallets = browserWallets();
  if (!wallets.length) {
    return h(
      "p",
      { class: "muted" },
      "No Solana wallet was found in this browser. Install one (for example Phantom or Solflare) to sign in with it.",
    );
  }
  return h(
    "div",
    { class: "stack" },
    h("p", {}, "Sign a one-time message with your wallet; no transaction is sent and nothing is paid."),
    wallets.map((w) =>
      h(
        "button",
        {
          type: "button",
          class: "primary",
          onclick: async () => {
            err.textContent = "";
            try {
              const address = await w.address();
              const challenge = await api("auth/wallet/challenge", {
                method: "POST",
                body: { wallet_address: address },
                auth: false,
              });
              const signature = base58(await w.sign(challenge.message));
              const pair = await api("auth/wallet/verify", {
                method: "POST",
                body: { wallet_address: address, signature, message: challenge.message },
                auth: false,
              });
              keepTokens(pair, null);
              const me = await api("me");
              setUser(me);
              await finish(me);
            } catch (ex) {
              err.textContent = ex?.code ? explain(ex) : `The wallet did not sign: ${ex?.message || ex}`;
            }
          },
        },
        `Sign in with ${w.name}`,
      ),
    ),
    err,
  );
}

const TABS = [
  ["password", "Password"],
  ["register", "New account"],
  ["wallet", "Solana wallet"],
];

export async function render(main) {
  const panel = h("div", { class: "panel", id: "signin-panel", role: "tabpanel" });
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "How to sign in" });
  const show = (name, state) => {
    for (const b of tabs.children) {
      const on = b.dataset.tab === name;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    const forms = {
      password: () => passwordForm(show),
      register: () => registerForm(show),
      verify: () => verifyForm(show, state),
      forgot: () => forgotForm(show),
      wallet: () => walletPanel(),
    };
    fill(panel, forms[name]());
    panel.querySelector("input")?.focus();
  };
  for (const [name, label] of TABS) {
    tabs.append(
      h(
        "button",
        {
          type: "button",
          role: "tab",
          "aria-controls": "signin-panel",
          dataset: { tab: name },
          onclick: () => show(name),
          onkeydown: (e) => {
            const i = TABS.findIndex(([n]) => n === name);
            const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
            if (step) {
              const next = TABS[(i + step + TABS.length) % TABS.length][0];
              show(next);
              tabs.querySelector(`[data-tab=${next}]`).focus();
            }
          },
        },
        label,
      ),
    );
  }
  fill(
    main,
    h(
      "div",
      { class: "signin" },
      h("h1", {}, "Sign in to Gridex"),
      h("p", { class: "lead" }, "Trade the energy your community produces, in 15-minute epochs."),
      tabs,
      panel,
    ),
  );
  show("password");
}
