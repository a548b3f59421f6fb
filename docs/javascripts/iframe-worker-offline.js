// Search on a page opened from the file system (file:), with no network and no server.
//
// Material's search runs in a Web Worker, and browsers refuse to start a worker from a file: URL.
// Material's offline plugin therefore loads a stand-in for Worker from a CDN, which an offline
// reader cannot reach. This file is that stand-in, written for this site and listed in mkdocs.yml
// (extra.polyfills; the plugin then adds no CDN script): on file: pages only, `new Worker(url)`
// runs the worker's script in a hidden same-origin frame whose `postMessage` and "message" events
// are wired to the page. Served over http(s) (mkdocs serve, a web server) the real Worker is used.
(function () {
  "use strict";
  if (location.protocol !== "file:") return;

  class FrameWorker extends EventTarget {
    constructor(url) {
      super();
      this.ready = false;
      this.queue = [];
      this.frame = document.createElement("iframe");
      this.frame.hidden = true;
      this.frame.setAttribute("aria-hidden", "true");
      (document.body || document.documentElement).appendChild(this.frame);
      const scope = this.frame.contentWindow;
      // What the worker's code calls as globals: postMessage (to the page) and importScripts.
      scope.postMessage = (data) => {
        setTimeout(() => this.dispatchEvent(new MessageEvent("message", { data: data })), 0);
      };
      scope.importScripts = () => {
        throw new Error("importScripts is not available to the offline search");
      };
      const script = scope.document.createElement("script");
      script.src = new URL(url, location.href).href;
      script.onload = () => {
        this.ready = true;
        this.queue.splice(0).forEach((data) => this.deliver(data));
      };
      script.onerror = () => {
        this.dispatchEvent(new Event("error"));
      };
      scope.document.head.appendChild(script);
    }

    deliver(data) {
      const scope = this.frame.contentWindow;
      setTimeout(() => scope.dispatchEvent(new scope.MessageEvent("message", { data: data })), 0);
    }

    postMessage(data) {
      if (this.ready) this.deliver(data);
      else this.queue.push(data);
    }

    terminate() {
      this.frame.remove();
    }
  }

  window.Worker = FrameWorker;
})();
