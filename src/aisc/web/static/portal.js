// Draws every <canvas data-chart="{Chart.js config}"> on the page, including ones htmx swaps in.
(function () {
  function hkd(cents) {
    var digits = Math.abs(cents) < 10000 ? 2 : 0; // small sums keep their cents
    return "HK$" + (cents / 100).toLocaleString("en-HK", {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    });
  }
  function draw(root) {
    if (!window.Chart) return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.chart) return;
      var config = JSON.parse(canvas.dataset.chart);
      config.options = config.options || {};
      config.options.responsive = true;
      config.options.maintainAspectRatio = false;
      config.options.animation = false; // charts are read, not watched; screenshots stay stable
      if (canvas.dataset.money === "cents") {
        config.options.scales = config.options.scales || {};
        config.options.scales.y = Object.assign(config.options.scales.y || {}, {
          ticks: { callback: hkd },
        });
      }
      canvas.chart = new Chart(canvas, config);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (e) { draw(e.target); });
})();
