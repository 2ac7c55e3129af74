/** The catalog page: keeps every card's viewer count, and the total, live. */
import { connectPresence } from "./presence.js";
import { viewersText } from "./format.js";

const cards = Array.from(document.querySelectorAll(".card[data-video-id]"));
const total = document.querySelector("[data-total-viewers]");

connectPresence({
  onPresence(presence) {
    let watching = 0;
    for (const card of cards) {
      const count = (presence.videos[card.dataset.videoId] || []).length;
      const label = card.querySelector("[data-viewers]");
      label.dataset.viewers = count;
      label.textContent = viewersText(count);
      watching += count;
    }
    if (total) total.textContent = watching;
  },
});
