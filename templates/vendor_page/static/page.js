/* Copy buttons for the vendor page (templates/vendor_page/page.html). The page works without this file: every
   value is selectable text and the buttons stay hidden. With it, each button copies its value through the
   Clipboard API; where that is missing or refused, through a hidden text area, and failing that it selects the
   value so the vendor can copy it by hand. */
(function () {
  "use strict";

  var main = document.getElementById("main");
  var status = document.getElementById("copy-status");
  var copiedText = (main && main.getAttribute("data-copied")) || "Copied";
  var selectedText = (main && main.getAttribute("data-selected")) || "Selected";

  function say(button, text) {
    if (!button.hasAttribute("data-label")) {
      button.setAttribute("data-label", button.textContent);
    }
    button.textContent = text;
    button.classList.add("copied");
    if (status) {
      status.textContent = text;
    }
    window.clearTimeout(Number(button.getAttribute("data-timer")));
    var timer = window.setTimeout(function () {
      button.textContent = button.getAttribute("data-label");
      button.classList.remove("copied");
    }, 2500);
    button.setAttribute("data-timer", String(timer));
  }

  function selectContents(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copyThroughTextArea(text) {
    var buffer = document.createElement("textarea");
    buffer.className = "copy-buffer";
    buffer.value = text;
    buffer.setAttribute("readonly", "");
    document.body.appendChild(buffer);
    buffer.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    document.body.removeChild(buffer);
    return copied;
  }

  function fallBack(button, text, target) {
    if (copyThroughTextArea(text)) {
      say(button, copiedText);
    } else {
      selectContents(target);
      say(button, selectedText);
    }
  }

  function copy(button, target) {
    var text = button.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        say(button, copiedText);
      }, function () {
        fallBack(button, text, target);
      });
    } else {
      fallBack(button, text, target);
    }
  }

  var buttons = document.querySelectorAll("button.copy[data-target]");
  Array.prototype.forEach.call(buttons, function (button) {
    var target = document.getElementById(button.getAttribute("data-target"));
    if (!target) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      copy(button, target);
    });
  });
}());
