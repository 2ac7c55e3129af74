/** The watch page: announces this viewer over presence, lists who else watches, and wires the captions and sources panels. */
import { connectPresence } from "./presence.js";
import { renderWatchers } from "./watchers.js";
import { setupCaptions } from "./captions.js";
import { followSources } from "./sources.js";

const root = document.querySelector(".watch[data-video-id]");
const videoId = root.dataset.videoId;
const video = document.getElementById("player");
const list = root.querySelector("[data-watchers]");
const counter = root.querySelector("[data-watcher-count]");
const captionSelect = root.querySelector("[data-caption-select]");
let mySocketId = null;

if (captionSelect) setupCaptions(video, captionSelect);
followSources(videoId, root.querySelector("[data-sources]"));

video.addEventListener("error", () => {
  const message = root.querySelector("[data-player-error]");
  message.textContent = "This video can't be played in this browser.";
  message.hidden = false;
});

connectPresence({
  onWelcome(socketId, send) {
    mySocketId = socketId;
    // Lets a person (or a test) tell which row is this tab.
    document.documentElement.dataset.socketId = socketId;
    send({ type: "watch", video: videoId });
  },
  onPresence(presence) {
    renderWatchers(list, counter, presence.videos[videoId] || [], mySocketId);
  },
});
