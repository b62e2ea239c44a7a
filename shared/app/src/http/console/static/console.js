// The Tripline console's only script (ours, no library, served from the binary). Every
// page works without it; it adds two things:
// - copy buttons for webhook URLs (a path is completed with this page's origin);
// - live updates: a page marked `data-live` (a run still going, a bulk job) fetches
//   itself every second and swaps in its new <main>, until the page says it is done.
"use strict";

function urlOf(text) {
  return text.startsWith("/") ? location.origin + text : text;
}

document.addEventListener("click", (e) => {
  const button = e.target.closest("button[data-copy]");
  if (!button) return;
  const url = urlOf(button.dataset.copy);
  const shown = document.getElementById(button.getAttribute("aria-controls"));
  if (shown) {
    shown.textContent = url;
    const range = document.createRange();
    range.selectNodeContents(shown);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  const said = (text) => {
    button.textContent = text;
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(url).then(() => said("Copied"), () => said("Selected: press Ctrl+C"));
  } else {
    said("Selected: press Ctrl+C");
  }
});

function showCopyButtons(root) {
  for (const b of root.querySelectorAll("button[data-copy]")) b.hidden = false;
}

async function refresh() {
  try {
    const answer = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok || answer.redirected) return true;
    const next = new DOMParser().parseFromString(await answer.text(), "text/html");
    const main = next.querySelector("main");
    if (!main) return true;
    document.querySelector("main").replaceWith(main);
    showCopyButtons(main);
    document.title = next.title;
    return next.body.hasAttribute("data-live");
  } catch (_) {
    return true; // the server is restarting: try again
  }
}

async function live() {
  while (document.body.hasAttribute("data-live")) {
    await new Promise((r) => setTimeout(r, 1000));
    if (!(await refresh())) document.body.removeAttribute("data-live");
  }
}

showCopyButtons(document);
live();
