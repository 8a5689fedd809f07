// Keyboard shortcuts of the webmail (ignored while typing in a field, with a
// modifier, or while compose.js's dialog is open): j/k or Down/Up next/previous,
// Home/End first/last, Enter or o open, u or Escape back to the list, r reply, a reply all, f forward,
// c compose, s flag, # or Delete delete, ! spam / not spam, / search.

function step(app, delta) {
  app.select(Math.min(Math.max(app.selected + delta, 0), app.items.length - 1));
  if (!document.getElementById("reader").hidden) return app.open();
}

const ACTIONS = {
  j: (app) => step(app, 1),
  ArrowDown: (app) => step(app, 1),
  k: (app) => step(app, -1),
  ArrowUp: (app) => step(app, -1),
  Home: (app) => step(app, -app.items.length),
  End: (app) => step(app, app.items.length),
  Enter: (app) => app.open(),
  o: (app) => app.open(),
  u: (app) => app.closeReader(),
  Escape: (app) => app.closeReader(),
  r: (app) => app.compose("reply"),
  a: (app) => app.compose("replyAll"),
  f: (app) => app.compose("forward"),
  c: (app) => app.compose("new"),
  s: (app) => app.toggleFlag(),
  "#": (app) => app.remove(),
  Delete: (app) => app.remove(),
  "!": (app) => app.spam(),
  "/": () => document.getElementById("search").focus(),
};

export function shortcut(app, event) {
  if (document.getElementById("app").hidden || event.ctrlKey || event.metaKey || event.altKey) return;
  if (document.querySelector(".compose-backdrop")) return;
  const target = event.target;
  if (target.closest && target.closest("input, textarea, select, [contenteditable], dialog")) return;
  if ((event.key === "Enter" || event.key === " ") && target.closest && target.closest("button, a")) return;
  const action = ACTIONS[event.key];
  if (!action) return;
  event.preventDefault();
  Promise.resolve(action(app)).catch((e) => app.notify(e.message));
}
