// Sanitising HTML mail before it is shown in a sandboxed iframe (srcdoc, no
// allow-scripts, no allow-same-origin, no allow-forms). The sandbox and the
// page's Content-Security-Policy (which the srcdoc document inherits) are the
// walls; this is the second layer, and the one that keeps remote content out:
// - scripts, frames, objects, forms and their controls, <base>, <link>, <meta> are removed;
// - every on* event handler attribute is removed, and javascript:/vbscript:/data: URLs
//   in links (data: stays allowed for images only);
// - remote images (<img src>, srcset, background=, poster, CSS url(...)) are blocked
//   until the caller passes {loadImages: true}: then only http(s) URLs come back;
// - cid: references (RFC 2392) are replaced by the data: URLs the caller supplies;
// - links open a new browsing context: target=_blank rel="noopener noreferrer".
//
// sanitize(html, {loadImages, cid}) -> {html, blockedImages}

const DROP = new Set([
  "script", "noscript", "iframe", "frame", "frameset", "object", "embed", "applet", "param",
  "base", "link", "meta", "form", "input", "button", "select", "option", "optgroup", "textarea",
  "datalist", "output", "keygen", "audio", "video", "source", "track", "canvas", "template",
  "portal", "dialog", "slot", "math", "title", "head",
]);
// elements whose children stay when the element itself goes (a <form> around a layout table)
const UNWRAP = new Set(["form", "head"]);
const URL_ATTRS = new Set(["href", "src", "action", "formaction", "xlink:href", "background",
                           "poster", "lowsrc", "dynsrc", "longdesc", "cite", "srcset", "ping",
                           "manifest", "codebase", "data", "icon", "usemap"]);
const SAFE_LINK = /^(https?:|mailto:|#)/i;
const CSS_URL = /url\s*\(\s*(['"]?)(.*?)\1\s*\)/gi;
const CSS_IMPORT = /@import[^;]*;?/gi;
const CSS_DANGER = /(expression\s*\(|-moz-binding|behavior\s*:)/gi;
// URLs CSS can name without url(): image-set("...") (CSS Images 4) and escapes that spell url( or
// @import; both are neutralised here, and the frame's own CSP (img-src data:) is the backstop
const CSS_IMAGE_SET = /(-webkit-)?image-set\s*\(/gi;
const CSS_ESCAPE = /\\/g;

function cssUrlRewriter(state, options) {
  return (match, quote, url) => {
    const target = url.trim();
    if (/^cid:/i.test(target)) {
      const data = options.cid && options.cid(target.slice(4));
      return data ? `url("${data}")` : "none";
    }
    if (/^data:image\//i.test(target)) return match;
    if (/^https?:/i.test(target)) {
      if (options.loadImages) return `url("${target.replace(/["\\\n]/g, "")}")`;
      state.blockedImages += 1;
      return "none";
    }
    return "none";
  };
}

function cleanCSS(text, state, options) {
  let css = text.replace(CSS_ESCAPE, "").replace(CSS_IMPORT, "").replace(CSS_DANGER, "blocked(");
  if (!options.loadImages && /image-set\s*\(/i.test(css)) {
    state.blockedImages += 1;
    css = css.replace(CSS_IMAGE_SET, "blocked(");
  }
  css = css.replace(CSS_URL, cssUrlRewriter(state, options));
  if (!options.loadImages) {
    // a remote URL left in any other spelling: gone too
    css = css.replace(/https?:\/\/[^\s'")]*/gi, () => { state.blockedImages += 1; return "none"; });
  }
  return css;
}

function imageSource(value, state, options) {
  const url = value.trim();
  if (/^cid:/i.test(url)) {
    return (options.cid && options.cid(url.slice(4))) || null;
  }
  if (/^data:image\/(png|gif|jpe?g|webp|bmp);/i.test(url)) return url;
  if (/^https?:/i.test(url)) {
    if (options.loadImages) return url;
    state.blockedImages += 1;
    return null;
  }
  return null;
}

function cleanElement(element, state, options) {
  const name = element.localName;
  for (const attr of Array.from(element.attributes)) {
    const attrName = attr.name.toLowerCase();
    if (attrName.startsWith("on") || attrName === "formaction" || attrName === "srcdoc" ||
        attrName === "is" || attrName === "autofocus" || attrName === "nonce") {
      element.removeAttribute(attr.name);
      continue;
    }
    if (attrName === "style") {
      element.setAttribute("style", cleanCSS(attr.value, state, options));
      continue;
    }
    if (!URL_ATTRS.has(attrName)) continue;
    if (attrName === "href" && (name === "a" || name === "area")) {
      if (!SAFE_LINK.test(attr.value.trim())) element.removeAttribute(attr.name);
      continue;
    }
    if (attrName === "src" && name === "img") {
      const source = imageSource(attr.value, state, options);
      if (source) element.setAttribute("src", source);
      else {
        element.removeAttribute("src");
        element.setAttribute("alt", element.getAttribute("alt") || "[image]");
      }
      continue;
    }
    if (attrName === "background") {
      const source = imageSource(attr.value, state, options);
      if (source) element.setAttribute("background", source);
      else element.removeAttribute("background");
      continue;
    }
    if (attrName === "srcset") {
      // only a single candidate survives; the browser would pick among remote ones otherwise
      if (/https?:/i.test(attr.value)) state.blockedImages += options.loadImages ? 0 : 1;
      element.removeAttribute(attr.name);
      continue;
    }
    element.removeAttribute(attr.name);
  }
  if (name === "a" || name === "area") {
    if (element.hasAttribute("href") && !element.getAttribute("href").startsWith("#")) {
      element.setAttribute("target", "_blank");
      element.setAttribute("rel", "noopener noreferrer");
    } else {
      element.removeAttribute("target");
    }
  }
  if (name === "style") {
    element.textContent = cleanCSS(element.textContent, state, options);
  }
}

function walk(node, state, options) {
  for (const child of Array.from(node.childNodes)) {
    if (child.nodeType === Node.COMMENT_NODE || child.nodeType === Node.PROCESSING_INSTRUCTION_NODE) {
      child.remove();
      continue;
    }
    if (child.nodeType !== Node.ELEMENT_NODE) continue;
    const name = child.localName;
    if (DROP.has(name) || child.namespaceURI !== "http://www.w3.org/1999/xhtml" && name !== "svg") {
      if (UNWRAP.has(name) && name !== "head") {
        walk(child, state, options);
        child.replaceWith(...Array.from(child.childNodes));
      } else {
        child.remove();
      }
      continue;
    }
    if (name === "svg") {
      // inline SVG can reference remote resources and script in many ways; not worth the risk
      child.remove();
      continue;
    }
    cleanElement(child, state, options);
    walk(child, state, options);
  }
}

export function sanitize(html, options = {}) {
  const state = {blockedImages: 0};
  const doc = new DOMParser().parseFromString(html, "text/html");
  // keep <style> from <head> (mail layouts depend on it); drop the rest of the head
  const styles = Array.from(doc.head ? doc.head.querySelectorAll("style") : []);
  walk(doc.body, state, options);
  const out = [];
  for (const style of styles) {
    out.push(`<style>${cleanCSS(style.textContent, state, options).replace(/<\/style/gi, "")}</style>`);
  }
  const body = doc.body;
  // attributes of <body> (bgcolor, style) carry the mail's look: keep the cleaned ones on a div
  const wrapper = doc.createElement("div");
  for (const attr of Array.from(body.attributes)) {
    if (/^(bgcolor|style|text|link|vlink|alink|dir|lang)$/i.test(attr.name)) {
      wrapper.setAttribute(attr.name, attr.value);
    }
  }
  cleanElement(wrapper, state, options);
  wrapper.append(...Array.from(body.childNodes));
  out.push(wrapper.outerHTML);
  return {html: out.join(""), blockedImages: state.blockedImages};
}

// The srcdoc document: our own tight CSP on top of the inherited one (no scripts at
// all, images only from data: or, once allowed, http(s)), and a base style.
export function frameDocument(cleanHTML, loadImages) {
  const images = loadImages ? "data: https: http:" : "data:";
  return "<!doctype html><html><head><meta charset=\"utf-8\">" +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src ${images}; font-src data:">` +
    "<style>body{margin:0;padding:8px;font-family:system-ui,sans-serif;font-size:14px;color:#1d2330;" +
    "word-wrap:break-word;overflow-wrap:anywhere}img{max-width:100%;height:auto}</style>" +
    "</head><body>" + cleanHTML + "</body></html>";
}
