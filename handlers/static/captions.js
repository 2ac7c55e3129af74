/**
 * The caption-language choice: the <select> shows one text track at a time
 * (or none), and follows a choice made from the player's own captions menu.
 */
export function setupCaptions(video, select) {
  const tracks = () => Array.from(video.textTracks);
  select.addEventListener("change", () => {
    for (const track of tracks()) track.mode = track.language === select.value ? "showing" : "disabled";
  });
  video.textTracks.addEventListener("change", () => {
    const showing = tracks().find((track) => track.mode === "showing");
    select.value = showing ? showing.language : "";
  });
}
