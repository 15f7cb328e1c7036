#[derive(Debug, palisade::ReplyError)]
enum ChatError {
    #[reply(code = "room_full", message = "the room is full")]
    RoomFull,
    #[reply(code = "room_full", message = "no seats left")]
    NoSeats,
}

fn main() {}
