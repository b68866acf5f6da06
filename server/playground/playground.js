/* The playground page: models from /v1/models, the answer streamed from
 * /v1/chat/completions (server-sent events read from fetch's body), shown as Markdown,
 * rendered (PgptMarkdown) and diffed against the input (PgptDiff).
 *
 * The API key (when `pgpt serve --api-key` asks for one) is kept in sessionStorage and sent
 * as a bearer token; a 401 opens the key form. Every error the server answers
 * ({"error": {"message": ...}}, also mid-stream) is shown in the page.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const KEY = "pgpt-api-key"; // sessionStorage: this tab only
  const PREFS = "pgpt-playground"; // localStorage: the last model and the faithful switch
  const DEFAULT_SYSTEM = "You render plain text into markdown format.";
  const SYSTEM =
    document.querySelector('meta[name="pgpt-system-message"]')?.content || DEFAULT_SYSTEM;

  /** An error the server answered (or the network's), with its HTTP status if any. */
  class ServerError extends Error {
    constructor(message, status = 0, code = null) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- the API --------------------------------------------------------------------------

  function headers() {
    const found = { "content-type": "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) found.authorization = `Bearer ${key}`;
    return found;
  }

  /** The server's error object of a failed response as a ServerError. */
  async function errorOf(response) {
    let message = `${response.status} ${response.statusText}`.trim();
    let code = null;
    try {
      const body = await response.json();
      if (body?.error?.message) ({ message, code } = body.error);
    } catch {
      // not JSON (a proxy's page): the status line says it
    }
    return new ServerError(message, response.status, code);
  }

  /** fetch() of an API path (relative to the page), throwing a ServerError unless 2xx. */
  async function call(path, init = {}) {
    let response;
    try {
      response = await fetch(path, { ...init, headers: headers() });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ServerError(`The server cannot be reached (${e.message}). Is pgpt serve running?`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  /** The data of each server-sent event of a streamed response, as they arrive. */
  async function* events(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      const parts = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : parts.pop();
      for (const part of parts) {
        const data = part
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
      if (done) return;
    }
  }

  // --- the page -------------------------------------------------------------------------

  const state = { answer: "", input: "", streaming: false, controller: null, frame: 0 };

  function showError(error) {
    $("error-text").textContent = error.message;
    $("error-title").textContent = error.status ? `Error ${error.status}` : "Error";
    $("error").hidden = false;
    if (error.status === 401) openKeyForm();
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function openKeyForm() {
    $("key-form").hidden = false;
    $("key").value = sessionStorage.getItem(KEY) || "";
    $("key").focus();
    $("key").select();
  }

  function savePrefs() {
    const prefs = { model: $("model").value, faithful: $("faithful").checked };
    localStorage.setItem(PREFS, JSON.stringify(prefs));
  }

  function loadPrefs() {
    try {
      return JSON.parse(localStorage.getItem(PREFS)) || {};
    } catch {
      return {};
    }
  }

  async function loadModels() {
    const select = $("model");
    setStatus("Loading the models…");
    try {
      const { data } = await (await call("v1/models")).json();
      const models = [...data].sort((a, b) => b.created - a.created || a.id.localeCompare(b.id));
      const chosen = select.value || loadPrefs().model;
      select.replaceChildren(
        ...models.map((model) => new Option(model.id, model.id, false, model.id === chosen)),
      );
      $("convert").disabled = models.length === 0;
      setStatus(models.length ? "" : "This server has no model.");
      clearError();
    } catch (error) {
      setStatus("");
      showError(error);
    }
  }

  /** Show the answer so far (at most once a frame while it streams). */
  function schedule() {
    if (!state.frame) state.frame = requestAnimationFrame(show);
  }

  function show() {
    state.frame = 0;
    $("markdown").textContent = state.answer;
    $("rendered").innerHTML = PgptMarkdown.render(state.answer); // escaped by the renderer
    $("copy").disabled = !state.answer;
    showDiff();
  }

  function showDiff() {
    const ops = PgptDiff.diff(state.input, state.answer);
    // while the answer streams, the input it has not reached yet is pending, not deleted
    let pending = ops.length;
    while (state.streaming && pending > 0 && ops[pending - 1].op === "del") pending--;
    const nodes = ops.map(({ op, text }, i) => {
      if (op === "same") return document.createTextNode(text);
      const node = document.createElement(op);
      node.textContent = text;
      if (i >= pending) node.className = "pending";
      if (/\n/.test(text) && !/\S/.test(text)) node.classList.add("breaks");
      return node;
    });
    $("diff").replaceChildren(...nodes);
    const counts = PgptDiff.summary(ops.slice(0, pending));
    $("diff-summary").textContent = state.answer
      ? `+${counts.ins} inserted, −${counts.del} deleted, ${counts.same} kept`
      : "";
  }

  async function convert(event) {
    event.preventDefault();
    if (state.streaming) return;
    const text = $("text").value;
    const model = $("model").value;
    if (!text.trim()) {
      showError(new ServerError("Paste some plain text first."));
      return;
    }
    if (!model) {
      await loadModels();
      if (!$("model").value) return;
    }
    clearError();
    savePrefs();
    Object.assign(state, { answer: "", input: text, streaming: true });
    state.controller = new AbortController();
    $("convert").disabled = true;
    $("stop").hidden = false;
    document.body.classList.add("streaming");
    show();
    const started = performance.now();
    let finish = null;
    setStatus("Waiting for the model…");
    try {
      const response = await call("v1/chat/completions", {
        method: "POST",
        signal: state.controller.signal,
        body: JSON.stringify({
          model: $("model").value,
          messages: [
            { role: "system", content: SYSTEM },
            { role: "user", content: text },
          ],
          stream: true,
          faithful: $("faithful").checked,
        }),
      });
      setStatus("Streaming…");
      for await (const data of events(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ServerError(chunk.error.message, 0, chunk.error.code);
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) {
          state.answer += choice.delta.content;
          schedule();
        }
        if (choice?.finish_reason) finish = choice.finish_reason;
      }
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      const cut = finish === "length" ? " (cut at the token limit)" : "";
      setStatus(`Done in ${seconds} s${cut}.`);
    } catch (error) {
      if (error.name === "AbortError") setStatus("Stopped.");
      else {
        setStatus("");
        showError(error);
      }
    } finally {
      state.streaming = false;
      state.controller = null;
      cancelAnimationFrame(state.frame);
      show();
      document.body.classList.remove("streaming");
      $("convert").disabled = false;
      $("stop").hidden = true;
    }
  }

  function init() {
    const prefs = loadPrefs();
    if (typeof prefs.faithful === "boolean") $("faithful").checked = prefs.faithful;
    $("convert-form").addEventListener("submit", convert);
    $("text").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        $("convert-form").requestSubmit();
      }
    });
    $("stop").addEventListener("click", () => state.controller?.abort());
    $("model").addEventListener("change", savePrefs);
    $("faithful").addEventListener("change", savePrefs);
    $("error-close").addEventListener("click", clearError);
    $("key-toggle").addEventListener("click", () => {
      if ($("key-form").hidden) openKeyForm();
      else $("key-form").hidden = true;
    });
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (key) sessionStorage.setItem(KEY, key);
      else sessionStorage.removeItem(KEY);
      $("key-form").hidden = true;
      loadModels();
    });
    $("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      $("key").value = "";
      loadModels();
    });
    $("copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(state.answer);
        setStatus("Markdown copied.");
      } catch {
        setStatus("The browser did not allow copying: select the Markdown instead.");
      }
    });
    loadModels();
  }

  init();
})();
